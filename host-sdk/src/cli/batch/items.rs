//! The items of a batch (manifest rows × sweep axes) and which of them a shard owns.

use std::path::{Path, PathBuf};

use odelt_host::batch::{parse_override, BatchItem};
use serde_json::{Map, Value as Json};

/// The most items one batch may have (a typo like `0..1e12` should fail, not fill memory).
pub const MAX_ITEMS: usize = 50_000_000;

/// Problems reading a manifest, a sweep or a shard.
#[derive(Debug, thiserror::Error)]
pub enum ItemsError {
    /// The manifest could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A manifest row is malformed.
    #[error("{path}:{line}: {reason}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A manifest whose kind cannot be told from its name.
    #[error("{0}: manifest must end in .jsonl, .json or .csv")]
    UnknownKind(PathBuf),
    /// A `--sweep` is malformed.
    #[error("--sweep {spec}: {reason}")]
    Sweep {
        /// The flag's value.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The batch is too large.
    #[error("the batch would have more than {MAX_ITEMS} items")]
    TooMany,
    /// Two items are the same (same overrides, hence the same outputs).
    #[error(
        "items {first} and {second} have the same overrides ({label}); every item must differ"
    )]
    Duplicate {
        /// The earlier item.
        first: usize,
        /// The later one.
        second: usize,
        /// Its overrides.
        label: String,
    },
    /// `--shard` or the environment describes no valid shard.
    #[error("{0}")]
    Shard(String),
}

/// One row of overrides (`NODE.INPUT`, value).
pub type Row = Vec<(String, Json)>;

/// The rows of a JSONL (`{"4.seed": 3}` or `["4.seed=3", ...]` per line) or CSV (a header
/// of `NODE.INPUT` columns; empty cells override nothing) manifest.
pub fn read_manifest(path: &Path) -> Result<Vec<Row>, ItemsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ItemsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jsonl") | Some("json") | Some("ndjson") => parse_jsonl(path, &text),
        Some("csv") => parse_csv(path, &text),
        _ => Err(ItemsError::UnknownKind(path.to_path_buf())),
    }
}

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<Row>, ItemsError> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| ItemsError::Row {
            path: path.to_path_buf(),
            line: n + 1,
            reason,
        };
        let v: Json = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let row = match v {
            Json::Object(m) => {
                let mut row = Row::new();
                for (t, v) in m {
                    check_target(&t).map_err(&bad)?;
                    row.push((t, v));
                }
                row
            }
            Json::Array(a) => {
                let mut row = Row::new();
                for s in a {
                    let Json::String(s) = s else {
                        return Err(bad("array rows hold \"NODE.INPUT=VALUE\" strings".into()));
                    };
                    let (t, v) = parse_override(&s).map_err(|e| bad(e.to_string()))?;
                    check_target(&t).map_err(&bad)?;
                    row.push((t, v));
                }
                row
            }
            _ => return Err(bad(
                "a row is an object {\"NODE.INPUT\": value} or an array of \"NODE.INPUT=VALUE\""
                    .into(),
            )),
        };
        rows.push(row);
    }
    Ok(rows)
}

/// A CSV record: its first line number and its fields.
type Record = (usize, Vec<String>);

/// Splits CSV text into records (RFC 4180: quoted fields, `""` inside quotes, CRLF or LF).
/// Errors are (line, reason).
fn csv_records(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut out = Vec::new();
    let mut rec: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut start_line = 1;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                quoted = true;
                any = true;
            }
            ',' => {
                rec.push(std::mem::take(&mut field));
                any = true;
            }
            '\r' => {}
            '\n' => {
                if any || !field.is_empty() {
                    rec.push(std::mem::take(&mut field));
                    out.push((start_line, std::mem::take(&mut rec)));
                }
                any = false;
                line += 1;
                start_line = line;
            }
            _ => {
                field.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err((start_line, "unterminated quoted field".into()));
    }
    if any || !field.is_empty() {
        rec.push(field);
        out.push((start_line, rec));
    }
    Ok(out)
}

fn parse_csv(path: &Path, text: &str) -> Result<Vec<Row>, ItemsError> {
    let records = csv_records(text).map_err(|(line, reason)| ItemsError::Row {
        path: path.to_path_buf(),
        line,
        reason,
    })?;
    let mut it = records.into_iter();
    let Some((hline, header)) = it.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<String> = header.into_iter().map(|h| h.trim().to_string()).collect();
    for h in &header {
        check_target(h).map_err(|reason| ItemsError::Row {
            path: path.to_path_buf(),
            line: hline,
            reason: format!("header: {reason}"),
        })?;
    }
    let mut rows = Vec::new();
    for (line, rec) in it {
        if rec.len() != header.len() {
            return Err(ItemsError::Row {
                path: path.to_path_buf(),
                line,
                reason: format!("{} fields, the header has {}", rec.len(), header.len()),
            });
        }
        let row = header
            .iter()
            .zip(rec)
            .filter(|(_, cell)| !cell.is_empty())
            .map(|(t, cell)| (t.clone(), cell_value(&cell)))
            .collect();
        rows.push(row);
    }
    Ok(rows)
}

/// A cell or list element: JSON when it parses (numbers, true, "quoted"), else the text.
fn cell_value(raw: &str) -> Json {
    serde_json::from_str::<Json>(raw.trim()).unwrap_or_else(|_| Json::String(raw.to_string()))
}

fn check_target(t: &str) -> Result<(), String> {
    match t.split_once('.') {
        Some((n, i)) if !n.is_empty() && !i.is_empty() => Ok(()),
        _ => Err(format!("'{t}' is not NODE.INPUT")),
    }
}

/// One `--sweep NODE.INPUT=VALUES` axis: `A..B` (integers, both included) or a comma list.
pub fn parse_sweep(spec: &str) -> Result<(String, Vec<Json>), ItemsError> {
    let bad = |reason: &str| ItemsError::Sweep {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (target, values) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected NODE.INPUT=A..B or NODE.INPUT=V1,V2,..."))?;
    check_target(target).map_err(|r| bad(&r))?;
    if let Some((a, b)) = values.split_once("..") {
        let a: i64 = a
            .trim()
            .parse()
            .map_err(|_| bad("range start is not an integer"))?;
        let b: i64 = b
            .trim()
            .parse()
            .map_err(|_| bad("range end is not an integer"))?;
        if b < a {
            return Err(bad("range end is below its start"));
        }
        let len = (b as i128 - a as i128 + 1) as u128;
        if len > MAX_ITEMS as u128 {
            return Err(ItemsError::TooMany);
        }
        return Ok((target.to_string(), (a..=b).map(Json::from).collect()));
    }
    let vals: Vec<Json> = values.split(',').map(cell_value).collect();
    if values.trim().is_empty() {
        return Err(bad("no values"));
    }
    Ok((target.to_string(), vals))
}

/// Every item: each manifest row (one empty row when there is no manifest) combined with
/// every point of the sweep axes (the last axis varying fastest), in that order. Refuses
/// duplicate items.
pub fn expand(rows: Vec<Row>, axes: &[(String, Vec<Json>)]) -> Result<Vec<BatchItem>, ItemsError> {
    let rows = if rows.is_empty() {
        vec![Row::new()]
    } else {
        rows
    };
    let mut total: usize = rows.len();
    for (_, v) in axes {
        total = total.checked_mul(v.len()).ok_or(ItemsError::TooMany)?;
    }
    if total > MAX_ITEMS {
        return Err(ItemsError::TooMany);
    }
    let mut items = Vec::with_capacity(total);
    for row in rows {
        let mut idx = vec![0usize; axes.len()];
        'points: loop {
            let mut ov = row.clone();
            for (a, (t, vals)) in axes.iter().enumerate() {
                ov.push((t.clone(), vals[idx[a]].clone()));
            }
            items.push(BatchItem::from_overrides(ov));
            // Odometer, last axis fastest; done when the first axis wraps.
            let mut a = axes.len();
            loop {
                if a == 0 {
                    break 'points;
                }
                a -= 1;
                idx[a] += 1;
                if idx[a] < axes[a].1.len() {
                    continue 'points;
                }
                idx[a] = 0;
            }
        }
    }
    let mut seen = std::collections::HashMap::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        if let Some(first) = seen.insert(it.key(), i) {
            return Err(ItemsError::Duplicate {
                first,
                second: i,
                label: it.label.clone(),
            });
        }
    }
    Ok(items)
}

/// The overrides of an item as a JSON object (in their order).
pub fn overrides_json(item: &BatchItem) -> Json {
    let mut m = Map::new();
    for (t, v) in &item.overrides {
        m.insert(t.clone(), v.clone());
    }
    Json::Object(m)
}

/// Shard `index` of `count`: it owns the items whose position `k` has `k % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

impl Shard {
    /// Parses `I/N` (0 ≤ I < N).
    pub fn parse(s: &str) -> Result<Shard, ItemsError> {
        let bad = || ItemsError::Shard(format!("shard '{s}': expected I/N with 0 <= I < N"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        Self::new(index, count).ok_or_else(bad)
    }

    fn new(index: usize, count: usize) -> Option<Shard> {
        (count > 0 && index < count).then_some(Shard { index, count })
    }

    /// Whether the item at `position` is this shard's.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// The shard the environment describes, and where it came from: `ODELT_SHARD=I/N`;
    /// Slurm's `SLURM_ARRAY_TASK_ID` (minus `SLURM_ARRAY_TASK_MIN`) of
    /// `SLURM_ARRAY_TASK_COUNT`; a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` of
    /// `JOB_COMPLETIONS` (which the Job must set to its `completions`); else 0/1.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<(Shard, &'static str), ItemsError> {
        let num = |name: &str| -> Result<Option<usize>, ItemsError> {
            match var(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    ItemsError::Shard(format!("{name}={v} is not a non-negative integer"))
                }),
            }
        };
        if let Some(s) = var("ODELT_SHARD").filter(|s| !s.trim().is_empty()) {
            return Ok((Shard::parse(&s)?, "ODELT_SHARD"));
        }
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let count = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                ItemsError::Shard(
                    "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not".into(),
                )
            })?;
            let index = id.checked_sub(min).ok_or_else(|| {
                ItemsError::Shard(format!(
                    "SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"
                ))
            })?;
            return Shard::new(index, count)
                .map(|s| (s, "Slurm array"))
                .ok_or_else(|| {
                    ItemsError::Shard(format!(
                        "Slurm array task {id} (min {min}) is not below SLURM_ARRAY_TASK_COUNT {count}: \
                         use a contiguous --array=0-{} (a %limit is fine) or pass --shard",
                        count.saturating_sub(1)
                    ))
                });
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = num("JOB_COMPLETIONS")?.ok_or_else(|| {
                ItemsError::Shard(
                    "JOB_COMPLETION_INDEX is set but JOB_COMPLETIONS is not: set it in the Job's env to spec.completions"
                        .into(),
                )
            })?;
            return Shard::new(index, count)
                .map(|s| (s, "Kubernetes Indexed Job"))
                .ok_or_else(|| {
                    ItemsError::Shard(format!(
                        "JOB_COMPLETION_INDEX {index} is not below JOB_COMPLETIONS {count}"
                    ))
                });
        }
        Ok((Shard { index: 0, count: 1 }, "default"))
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |k| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
    }

    #[test]
    fn sweeps_are_products_with_the_last_axis_fastest() {
        let axes = vec![
            parse_sweep("4.seed=0..2").unwrap(),
            parse_sweep("2.active_blocks=2,4").unwrap(),
        ];
        let items = expand(vec![], &axes).unwrap();
        assert_eq!(items.len(), 6);
        assert_eq!(items[0].label, "4.seed=0 2.active_blocks=2");
        assert_eq!(items[1].label, "4.seed=0 2.active_blocks=4");
        assert_eq!(items[5].label, "4.seed=2 2.active_blocks=4");
        assert!(parse_sweep("4.seed=3..1").is_err());
        assert!(parse_sweep("seed=1,2").is_err());
        assert!(parse_sweep("4.seed=").is_err());
        assert!(matches!(
            parse_sweep("4.seed=0..99999999999"),
            Err(ItemsError::TooMany)
        ));
        assert_eq!(
            parse_sweep("6.text=a,\"b\"").unwrap().1,
            vec![json!("a"), json!("b")]
        );
        let none = expand(vec![], &[]).unwrap();
        assert_eq!(none.len(), 1);
        let dup = expand(vec![], &[parse_sweep("4.seed=1,1").unwrap()]);
        assert!(matches!(
            dup,
            Err(ItemsError::Duplicate {
                first: 0,
                second: 1,
                ..
            })
        ));
    }

    #[test]
    fn manifests_parse_jsonl_and_csv() {
        let p = Path::new("m.jsonl");
        let rows = parse_jsonl(
            p,
            "{\"4.seed\": 1, \"2.active_blocks\": 4}\n\n[\"4.seed=2\"]\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], ("2.active_blocks".to_string(), json!(4)));
        assert_eq!(rows[1][0], ("4.seed".to_string(), json!(2)));
        assert!(matches!(
            parse_jsonl(p, "{\"seed\": 1}"),
            Err(ItemsError::Row { line: 1, .. })
        ));
        assert!(matches!(
            parse_jsonl(p, "{}\n3"),
            Err(ItemsError::Row { line: 2, .. })
        ));
        let c = Path::new("m.csv");
        let rows = parse_csv(c, "4.seed,6.text\r\n1,\"a, \"\"b\"\"\"\n2,\n").unwrap();
        assert_eq!(
            rows[0],
            vec![
                ("4.seed".into(), json!(1)),
                ("6.text".into(), json!("a, \"b\""))
            ]
        );
        assert_eq!(rows[1], vec![("4.seed".into(), json!(2))]);
        assert!(matches!(
            parse_csv(c, "4.seed\n1,2\n"),
            Err(ItemsError::Row { line: 2, .. })
        ));
        assert!(parse_csv(c, "nodot\n1\n").is_err());
        let both = expand(rows, &[parse_sweep("2.active_blocks=2,4").unwrap()]).unwrap();
        assert_eq!(both.len(), 4);
    }

    #[test]
    fn shards_come_from_flags_slurm_or_kubernetes() {
        assert_eq!(Shard::parse("3/4").unwrap(), Shard { index: 3, count: 4 });
        assert!(Shard::parse("4/4").is_err());
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("x").is_err());
        let s = Shard { index: 1, count: 3 };
        assert_eq!(
            (0..7).filter(|k| s.owns(*k)).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert_eq!(
            Shard::from_env(env(&[])).unwrap().0,
            Shard { index: 0, count: 1 }
        );
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "10"),
        ]);
        assert_eq!(
            Shard::from_env(slurm).unwrap().0,
            Shard {
                index: 7,
                count: 10
            }
        );
        let slurm1 = env(&[
            ("SLURM_ARRAY_TASK_ID", "10"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "10"),
        ]);
        assert_eq!(
            Shard::from_env(slurm1).unwrap().0,
            Shard {
                index: 9,
                count: 10
            }
        );
        assert!(Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "3")])).is_err());
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2"), ("JOB_COMPLETIONS", "5")]);
        assert_eq!(
            Shard::from_env(k8s).unwrap(),
            (Shard { index: 2, count: 5 }, "Kubernetes Indexed Job")
        );
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "2")])).is_err());
        assert!(Shard::from_env(env(&[
            ("JOB_COMPLETION_INDEX", "5"),
            ("JOB_COMPLETIONS", "5")
        ]))
        .is_err());
        let explicit = env(&[("ODELT_SHARD", "1/2"), ("SLURM_ARRAY_TASK_ID", "0")]);
        assert_eq!(
            Shard::from_env(explicit).unwrap().0,
            Shard { index: 1, count: 2 }
        );
    }
}
