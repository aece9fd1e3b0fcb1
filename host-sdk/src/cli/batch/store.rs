//! The on-disk layout of a batch run, shared by every shard (often on a shared volume):
//!
//! ```text
//! OUT/items/<key>/<node>-<name>_00001_.png   finished outputs, one folder per item
//! OUT/.odelt-batch/batch.json                 what the batch is (fingerprint, workflow, item count)
//! OUT/.odelt-batch/items.jsonl                every item: {"index", "key", "overrides"}
//! OUT/.odelt-batch/journal/shard-00003-of-00016.jsonl   finished items of that shard, one line each
//! OUT/.odelt-batch/journal/shard-00003-of-00016.state.json   who runs it (host, pid), running/done/failed
//! OUT/.odelt-batch/staging/<key>/             an item being written (moved to items/ when complete)
//! ```
//!
//! Every file other than a journal is written under a temporary name and renamed, so a
//! reader never sees half of one. A journal only grows by whole lines (a line torn by a kill
//! is cut off when its shard opens it again, and readers skip it).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::items::Shard;

/// Problems with the batch directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or folder operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A batch file is not what this version writes.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory holds another batch.
    #[error(
        "{dir} holds a different batch (fingerprint {found}, this one is {wanted}): \
         the workflow, the --set values, the items or --item-seed changed; use another --output-dir"
    )]
    OtherBatch {
        /// The output directory.
        dir: PathBuf,
        /// Its fingerprint.
        found: String,
        /// This batch's.
        wanted: String,
    },
    /// Not a batch directory.
    #[error("{0} is not a batch output directory (no .odelt-batch/batch.json): run `odelt batch` into it first")]
    NotABatch(PathBuf),
}

pub(super) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// `batch.json`: what every shard of the run must agree on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchInfo {
    /// Layout version.
    pub format: u32,
    /// Hash of the workflow (after `--set`), the items and the item-seed target.
    pub fingerprint: String,
    /// Number of items.
    pub items: usize,
    /// The input that receives a per-item seed, if any.
    pub item_seed: Option<String>,
    /// The workflow every item starts from.
    pub workflow: Json,
}

/// One line of `items.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ItemLine {
    /// Position in the batch.
    pub index: usize,
    /// The item's name ([`odelt_host::BatchItem::key`]).
    pub key: String,
    /// `{NODE.INPUT: value}` as applied (a derived seed included).
    pub overrides: Json,
}

/// One line of a journal: an item whose outputs are complete under `items/<key>/`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Done {
    /// The item's name.
    pub key: String,
    /// Its position.
    pub index: usize,
    /// Its files, relative to the output directory, sorted.
    pub files: Vec<String>,
    /// The shard that ran it (`I/N`).
    pub shard: String,
    /// Milliseconds the run took; then the commit (sync, rename, journal line).
    pub run_ms: f64,
}

/// `shard-…state.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardState {
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Host name of the process.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Unix seconds of the last change.
    pub updated: u64,
    /// The reason, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A batch output directory.
#[derive(Clone, Debug)]
pub struct Store {
    /// The output directory.
    pub root: PathBuf,
}

/// Path of a file inside the output directory, `/`-separated.
pub const ITEMS_DIR: &str = "items";
/// The batch's own files.
pub const META_DIR: &str = ".odelt-batch";

impl Store {
    /// The store at `root` (nothing is touched).
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    fn meta(&self) -> PathBuf {
        self.root.join(META_DIR)
    }
    /// `batch.json`.
    pub fn info_path(&self) -> PathBuf {
        self.meta().join("batch.json")
    }
    /// `items.jsonl`.
    pub fn items_path(&self) -> PathBuf {
        self.meta().join("items.jsonl")
    }
    /// The journals' folder.
    pub fn journal_dir(&self) -> PathBuf {
        self.meta().join("journal")
    }
    /// The staging root.
    pub fn staging_root(&self) -> PathBuf {
        self.meta().join("staging")
    }
    /// The staging folder of an item, relative to the output directory (`/`-separated, as a
    /// `filename_prefix` folder).
    pub fn staging_rel(key: &str) -> String {
        format!("{META_DIR}/staging/{key}")
    }
    /// The finished folder of an item.
    pub fn item_dir(&self, key: &str) -> PathBuf {
        self.root.join(ITEMS_DIR).join(key)
    }
    /// A shard's journal.
    pub fn journal_path(&self, s: Shard) -> PathBuf {
        self.journal_dir()
            .join(format!("shard-{:05}-of-{:05}.jsonl", s.index, s.count))
    }
    /// A shard's state file.
    pub fn state_path(&self, s: Shard) -> PathBuf {
        self.journal_dir()
            .join(format!("shard-{:05}-of-{:05}.state.json", s.index, s.count))
    }

    /// Creates the folders and records the batch, or checks that the directory already holds
    /// this same batch. Safe when many shards start at once (they write identical files).
    pub fn prepare(&self, info: &BatchInfo, items: &[ItemLine]) -> Result<(), StoreError> {
        for d in [
            self.journal_dir(),
            self.staging_root(),
            self.root.join(ITEMS_DIR),
        ] {
            std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
        }
        match self.read_info() {
            Ok(found) if found.fingerprint == info.fingerprint => return Ok(()),
            Ok(found) => {
                return Err(StoreError::OtherBatch {
                    dir: self.root.clone(),
                    found: found.fingerprint,
                    wanted: info.fingerprint.clone(),
                })
            }
            Err(StoreError::NotABatch(_)) => {}
            Err(e) => return Err(e),
        }
        let mut text = String::with_capacity(items.len() * 64);
        for it in items {
            text.push_str(&serde_json::to_string(it).unwrap_or_default());
            text.push('\n');
        }
        // items.jsonl before batch.json: a batch.json always has its item list beside it.
        write_atomic(&self.items_path(), text.as_bytes())?;
        let json = serde_json::to_string_pretty(info).unwrap_or_default();
        write_atomic(&self.info_path(), json.as_bytes())
    }

    /// Reads `batch.json`.
    pub fn read_info(&self) -> Result<BatchInfo, StoreError> {
        let p = self.info_path();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotABatch(self.root.clone()))
            }
            Err(e) => return Err(io("reading", &p)(e)),
        };
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: p,
            reason: e.to_string(),
        })
    }

    /// Reads `items.jsonl`.
    pub fn read_items(&self) -> Result<Vec<ItemLine>, StoreError> {
        let p = self.items_path();
        let text = std::fs::read_to_string(&p).map_err(io("reading", &p))?;
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let it: ItemLine = serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
                path: p.clone(),
                reason: format!("line {}: {e}", n + 1),
            })?;
            if it.index != n {
                return Err(StoreError::Corrupt {
                    path: p.clone(),
                    reason: format!("line {} holds item {}", n + 1, it.index),
                });
            }
            out.push(it);
        }
        Ok(out)
    }

    /// Every journal in the directory: its shard (from the file name) and its whole lines.
    pub fn read_journals(&self) -> Result<Vec<(Shard, Vec<Done>)>, StoreError> {
        let dir = self.journal_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("listing", &dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(shard) = parse_journal_name(&name) else {
                continue;
            };
            out.push((shard, read_journal(&e.path())?));
        }
        out.sort_by_key(|(s, _)| (s.count, s.index));
        Ok(out)
    }

    /// A shard's state file, if any.
    pub fn read_state(&self, s: Shard) -> Option<ShardState> {
        let text = std::fs::read_to_string(self.state_path(s)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Records a shard's state.
    pub fn write_state(
        &self,
        s: Shard,
        state: &str,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let st = ShardState {
            state: state.to_string(),
            host: host_name(),
            pid: std::process::id(),
            updated: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            error,
        };
        let json = serde_json::to_string_pretty(&st).unwrap_or_default();
        write_atomic(&self.state_path(s), json.as_bytes())
    }

    /// Finished items by key, from every journal (the first record of a key wins; a record
    /// whose key is not the item's at its index is ignored).
    pub fn done_by_key(&self, items: &[ItemLine]) -> Result<HashMap<String, Done>, StoreError> {
        let mut done = HashMap::new();
        for (_, lines) in self.read_journals()? {
            for d in lines {
                if items.get(d.index).is_some_and(|it| it.key == d.key) {
                    done.entry(d.key.clone()).or_insert(d);
                }
            }
        }
        Ok(done)
    }
}

fn parse_journal_name(name: &str) -> Option<Shard> {
    let rest = name.strip_prefix("shard-")?.strip_suffix(".jsonl")?;
    let (i, n) = rest.split_once("-of-")?;
    let (index, count) = (i.parse().ok()?, n.parse().ok()?);
    (index < count).then_some(Shard { index, count })
}

/// The whole lines of a journal that parse (a torn last line is skipped).
fn read_journal(path: &Path) -> Result<Vec<Done>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", path)(e)),
    };
    let whole = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(p) => &bytes[..=p],
        None => &[][..],
    };
    Ok(String::from_utf8_lossy(whole)
        .lines()
        .filter_map(|l| serde_json::from_str::<Done>(l).ok())
        .collect())
}

/// A shard's journal, open for appending.
pub struct Journal {
    file: File,
    path: PathBuf,
    sync: bool,
}

impl Journal {
    /// Opens (creating) the journal, first cutting off a line torn by a kill.
    pub fn open(path: &Path, sync: bool) -> Result<Journal, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io("opening", path))?;
        let bytes = std::fs::read(path).map_err(io("reading", path))?;
        if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
            let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            file.set_len(keep as u64).map_err(io("truncating", path))?;
        }
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            sync,
        })
    }

    /// Appends one record as one write of one whole line (synced to disk when asked).
    pub fn append(&mut self, d: &Done) -> Result<(), StoreError> {
        let mut line = serde_json::to_string(d).unwrap_or_default();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io("appending to", &self.path))?;
        if self.sync {
            self.file.sync_data().map_err(io("syncing", &self.path))?;
        }
        Ok(())
    }
}

/// Writes `bytes` to a unique temporary name beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("renaming into", path)(e)
    })
}

/// This machine's host name (`unknown` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether process `pid` is alive on this machine (`None` when that cannot be told).
pub fn pid_alive(pid: u32) -> Option<bool> {
    Path::new("/proc/self")
        .exists()
        .then(|| Path::new(&format!("/proc/{pid}")).exists())
}

/// Files under `dir`, relative to it with `/` separators, sorted.
pub fn list_files(dir: &Path) -> Result<Vec<String>, StoreError> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) -> Result<(), StoreError> {
        for e in std::fs::read_dir(d).map_err(io("listing", d))? {
            let e = e.map_err(io("listing", d))?;
            let p = e.path();
            let ft = e.file_type().map_err(io("reading", &p))?;
            if ft.is_dir() {
                walk(base, &p, out)?;
            } else if let Ok(rel) = p.strip_prefix(base) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("odelt-batch-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn done(k: &str, i: usize) -> Done {
        Done {
            key: k.into(),
            index: i,
            files: vec![format!("items/{k}/a.png")],
            shard: "0/1".into(),
            run_ms: 1.0,
        }
    }

    #[test]
    fn journals_drop_torn_lines_and_keep_whole_ones() {
        let d = tmp("journal");
        let p = d.join("shard-00000-of-00001.jsonl");
        let mut j = Journal::open(&p, true).unwrap();
        j.append(&done("a", 0)).unwrap();
        j.append(&done("b", 1)).unwrap();
        drop(j);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(b"{\"key\":\"c\",\"ind");
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_journal(&p).unwrap().len(), 2);
        let mut j = Journal::open(&p, false).unwrap();
        j.append(&done("c", 2)).unwrap();
        let lines = read_journal(&p).unwrap();
        assert_eq!(
            lines.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(
            parse_journal_name("shard-00003-of-00016.jsonl"),
            Some(Shard {
                index: 3,
                count: 16
            })
        );
        assert_eq!(parse_journal_name("shard-00016-of-00016.jsonl"), None);
        assert_eq!(parse_journal_name("shard-00001-of-00016.state.json"), None);
    }

    #[test]
    fn a_directory_holds_one_batch() {
        let d = tmp("prepare");
        let s = Store::new(&d);
        assert!(matches!(s.read_info(), Err(StoreError::NotABatch(_))));
        let info = BatchInfo {
            format: 1,
            fingerprint: "f1".into(),
            items: 1,
            item_seed: None,
            workflow: serde_json::json!({}),
        };
        let items = vec![ItemLine {
            index: 0,
            key: "k".into(),
            overrides: serde_json::json!({}),
        }];
        s.prepare(&info, &items).unwrap();
        s.prepare(&info, &items).unwrap();
        assert_eq!(s.read_items().unwrap(), items);
        let other = BatchInfo {
            fingerprint: "f2".into(),
            ..info
        };
        assert!(matches!(
            s.prepare(&other, &items),
            Err(StoreError::OtherBatch { .. })
        ));
        std::fs::create_dir_all(d.join("x/y")).unwrap();
        std::fs::write(d.join("x/y/b"), "").unwrap();
        std::fs::write(d.join("x/a"), "").unwrap();
        assert_eq!(list_files(&d.join("x")).unwrap(), ["a", "y/b"]);
    }
}
