//! The official ODE_t(ODE_l) training checkpoints (`<step>.pkl`, spec §3), read without Python.
//!
//! The official `train.py` writes `pickle.dumps({'params', 'params_ema', 'opt_state', 'step', '_timestamp'})` with
//! numpy arrays in nested dicts (Flax module names as keys) and optax state objects in `opt_state`; shortcut-models
//! files may wrap the same dict in `{'train_state': ...}`. [`load_official_pkl`] reads one parameter tree
//! ([`WeightsSlot::Params`] by default — the tree the official evaluation uses) with the safe reader of
//! [`super::pickle`], flattens it to `/`-joined Flax paths (`DiTBlock_0/Dense_1/kernel`) and converts every array to
//! `f32` in C order, keeping the Flax layouts (Dense kernel `[in, out]`, Conv kernel `[kh, kw, in, out]`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::pickle::{self, ArrayError, PickleError, Value};
pub use super::WeightsSlot;

/// One parameter: its shape (Flax layout) and its values as `f32` in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct RawArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Parameters by `/`-joined Flax path.
pub type FlatParams = BTreeMap<String, RawArray>;

/// What a checkpoint yielded besides its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct OfficialCheckpoint {
    /// The chosen parameter tree, flattened.
    pub params: FlatParams,
    /// Which tree `params` came from.
    pub slot: WeightsSlot,
    /// The training step stored in the file, if any (an int or an integer numpy scalar/0-d array).
    pub step: Option<i64>,
    /// The file wrapped its dict in `train_state` (shortcut-models style).
    pub train_state_wrapper: bool,
    /// The keys of the (unwrapped) top-level dict, in file order.
    pub top_level_keys: Vec<String>,
}

/// Where to read a checkpoint from.
#[derive(Debug, Clone, Copy)]
pub enum PklSource<'a> {
    Path(&'a Path),
    Bytes(&'a [u8]),
}

impl<'a> From<&'a Path> for PklSource<'a> {
    fn from(p: &'a Path) -> Self {
        PklSource::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for PklSource<'a> {
    fn from(p: &'a PathBuf) -> Self {
        PklSource::Path(p)
    }
}

impl<'a> From<&'a str> for PklSource<'a> {
    fn from(p: &'a str) -> Self {
        PklSource::Path(Path::new(p))
    }
}

impl<'a> From<&'a [u8]> for PklSource<'a> {
    fn from(b: &'a [u8]) -> Self {
        PklSource::Bytes(b)
    }
}

impl<'a> From<&'a Vec<u8>> for PklSource<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        PklSource::Bytes(b)
    }
}

/// Why an official checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pickle itself is malformed, truncated or hostile.
    #[error("{0}")]
    Pickle(#[from] PickleError),
    /// Something that must be a dict is not.
    #[error("{what} is a {found}, expected a dict")]
    NotADict { what: String, found: &'static str },
    /// A required key is absent.
    #[error("checkpoint has no `{key}` (keys present: {available})")]
    MissingKey {
        key: &'static str,
        available: String,
    },
    /// A dict key in the parameter tree is not a string.
    #[error("parameter tree at `{path}` has a key of type {found}, expected a string")]
    NonStringKey { path: String, found: &'static str },
    /// A leaf of the parameter tree is not an array.
    #[error("parameter `{path}` is a {found}, expected a numpy array")]
    NotAnArray { path: String, found: &'static str },
    /// A parameter is not floating point.
    #[error("parameter `{path}` has dtype {dtype}; only float16, bfloat16, float32 and float64 parameters can be loaded")]
    NotFloat { path: String, dtype: String },
    /// A parameter's data does not match its shape.
    #[error("parameter `{path}`: {source}")]
    Array {
        path: String,
        #[source]
        source: ArrayError,
    },
    /// The parameter tree holds no arrays at all.
    #[error("the `{slot}` tree holds no arrays")]
    Empty { slot: &'static str },
    /// Two paths flatten to the same name (a key containing '/').
    #[error("parameter path `{path}` appears twice (a key contains '/')")]
    DuplicatePath { path: String },
}

fn slot_key(slot: WeightsSlot) -> &'static str {
    match slot {
        WeightsSlot::Params => "params",
        WeightsSlot::ParamsEma => "params_ema",
    }
}

/// Reads one parameter tree of an official checkpoint, flattened to Flax paths, as `f32`.
pub fn load_official_pkl<'s>(
    src: impl Into<PklSource<'s>>,
    slot: WeightsSlot,
) -> Result<FlatParams, CheckpointError> {
    load_official_checkpoint(src, slot).map(|c| c.params)
}

/// Like [`load_official_pkl`], also returning the step and what the file held.
pub fn load_official_checkpoint<'s>(
    src: impl Into<PklSource<'s>>,
    slot: WeightsSlot,
) -> Result<OfficialCheckpoint, CheckpointError> {
    match src.into() {
        PklSource::Bytes(b) => from_bytes(b, slot),
        PklSource::Path(path) => {
            let io = |source| CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            };
            let file = std::fs::File::open(path).map_err(io)?;
            // SAFETY: the mapping is read-only and lives only for this call; the checkpoint is not expected to be
            // modified while it is read (as with every mmap-based weight loader). Mapping avoids holding a second
            // copy of multi-GB files in memory: array data is converted straight from the mapping.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            from_bytes(&map, slot)
        }
    }
}

fn from_bytes(bytes: &[u8], slot: WeightsSlot) -> Result<OfficialCheckpoint, CheckpointError> {
    let root = pickle::parse(bytes)?;
    let (top, train_state_wrapper) = match root.get("train_state") {
        Some(inner) => (inner, true),
        None => (&root, false),
    };
    let entries = mapping(top).ok_or_else(|| CheckpointError::NotADict {
        what: if train_state_wrapper {
            "the checkpoint's `train_state`".into()
        } else {
            "the checkpoint's top level".into()
        },
        found: top.type_name(),
    })?;
    let top_level_keys: Vec<String> = entries
        .iter()
        .map(|(k, _)| match k {
            Value::Str(s) => s.to_string(),
            other => format!("<{}>", other.type_name()),
        })
        .collect();
    let key = slot_key(slot);
    let tree = lookup(entries, key).ok_or_else(|| CheckpointError::MissingKey {
        key,
        available: if top_level_keys.is_empty() {
            "none".into()
        } else {
            top_level_keys.join(", ")
        },
    })?;
    // A Flax variables dict `{'params': {...}}` stored as the params tree: unwrap it.
    let tree = match mapping(tree) {
        Some(e) if e.len() == 1 => match lookup(e, "params") {
            Some(inner) if mapping(inner).is_some() => inner,
            _ => tree,
        },
        _ => tree,
    };
    let mut params = FlatParams::new();
    flatten(tree, key, &mut String::new(), &mut params)?;
    if params.is_empty() {
        return Err(CheckpointError::Empty { slot: key });
    }
    let step = lookup(entries, "step").and_then(Value::as_i64);
    Ok(OfficialCheckpoint {
        params,
        slot,
        step,
        train_state_wrapper,
        top_level_keys,
    })
}

/// The entries of a dict, or of the `BUILD` state dict of an object stub (a pickled dataclass).
fn mapping<'v, 'a>(v: &'v Value<'a>) -> Option<&'v [(Value<'a>, Value<'a>)]> {
    match v {
        Value::Dict(d) => Some(d),
        Value::Object(o) => o.state.as_ref().and_then(Value::as_dict),
        _ => None,
    }
}

fn lookup<'v, 'a>(entries: &'v [(Value<'a>, Value<'a>)], key: &str) -> Option<&'v Value<'a>> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn flatten(
    v: &Value<'_>,
    root: &'static str,
    prefix: &mut String,
    out: &mut FlatParams,
) -> Result<(), CheckpointError> {
    let here = |prefix: &str| {
        if prefix.is_empty() {
            root.to_string()
        } else {
            prefix.to_string()
        }
    };
    match v {
        Value::Dict(entries) => {
            let mut seen = std::collections::HashSet::new();
            // Python keeps the last value of a repeated key.
            for (k, child) in entries.iter().rev() {
                let Value::Str(name) = k else {
                    return Err(CheckpointError::NonStringKey {
                        path: here(prefix),
                        found: k.type_name(),
                    });
                };
                if !seen.insert(name.as_ref()) {
                    continue;
                }
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(name);
                let r = flatten(child, root, prefix, out);
                prefix.truncate(len);
                r?;
            }
            Ok(())
        }
        Value::Array(a) => {
            let path = here(prefix);
            if !a.dtype.elem.is_float() {
                return Err(CheckpointError::NotFloat {
                    path,
                    dtype: a.dtype.to_string(),
                });
            }
            let data = a.to_f32_vec().map_err(|source| CheckpointError::Array {
                path: path.clone(),
                source,
            })?;
            if out.contains_key(&path) {
                return Err(CheckpointError::DuplicatePath { path });
            }
            out.insert(
                path,
                RawArray {
                    shape: a.shape.clone(),
                    data,
                },
            );
            Ok(())
        }
        other => Err(if prefix.is_empty() {
            CheckpointError::NotADict {
                what: format!("the `{root}` tree"),
                found: other.type_name(),
            }
        } else {
            CheckpointError::NotAnArray {
                path: here(prefix),
                found: other.type_name(),
            }
        }),
    }
}

/// A table of the parameters (path, shape, count) and the totals, for an `inspect` command.
pub fn describe(params: &FlatParams) -> String {
    let width = params.keys().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    let mut total = 0usize;
    for (name, a) in params {
        let n = a.data.len();
        total = total.saturating_add(n);
        let _ = writeln!(out, "{name:<width$}  {:<18}  {n}", format!("{:?}", a.shape));
    }
    let _ = writeln!(
        out,
        "{} tensors, {} parameters ({:.2} M)",
        params.len(),
        total,
        total as f64 / 1e6
    );
    out
}

/// [`describe`] for a whole checkpoint: slot, step, top-level keys, then the parameter table.
pub fn describe_checkpoint(ckpt: &OfficialCheckpoint) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "official pickle checkpoint: tree `{}`{}, step {}, top-level keys [{}]",
        slot_key(ckpt.slot),
        if ckpt.train_state_wrapper {
            " (inside train_state)"
        } else {
            ""
        },
        ckpt.step
            .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
        ckpt.top_level_keys.join(", ")
    );
    out.push_str(&describe(&ckpt.params));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{'params': {'A': {'kernel': <f64 array [2]>}}, 'step': 7}` assembled by hand.
    fn tiny(dtype: &str, data: &[u8], key: &str) -> Vec<u8> {
        let mut p = vec![0x80, 4, b'}', b'('];
        let s = |p: &mut Vec<u8>, s: &str| {
            p.push(0x8c);
            p.push(s.len() as u8);
            p.extend(s.as_bytes());
        };
        s(&mut p, key);
        p.push(b'}');
        s(&mut p, "A");
        p.push(b'}');
        s(&mut p, "kernel");
        s(&mut p, "numpy.core.multiarray");
        s(&mut p, "_reconstruct");
        p.push(0x93);
        s(&mut p, "numpy");
        s(&mut p, "ndarray");
        p.extend([
            0x93, b'K', 0, 0x85, b'C', 1, b'b', 0x87, b'R', b'(', b'K', 1, b'K', 2, 0x85,
        ]);
        s(&mut p, "numpy");
        s(&mut p, "dtype");
        p.push(0x93);
        s(&mut p, dtype);
        p.extend([0x89, 0x88, 0x87, b'R', b'(', b'K', 3]);
        s(&mut p, "<");
        p.extend([b'N', b'N', b'N', b'J']);
        p.extend((-1i32).to_le_bytes());
        p.push(b'J');
        p.extend((-1i32).to_le_bytes());
        p.extend([b'K', 0, b't', b'b', 0x89, b'C', data.len() as u8]);
        p.extend(data);
        p.extend([b't', b'b', b's', b's']);
        s(&mut p, "step");
        p.extend([b'K', 7, b'u', b'.']);
        p
    }

    #[test]
    fn f64_converted_and_step_read() {
        let data: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let ck =
            load_official_checkpoint(&tiny("f8", &data, "params"), WeightsSlot::Params).unwrap();
        assert_eq!(ck.step, Some(7));
        assert_eq!(ck.params.len(), 1);
        let a = &ck.params["A/kernel"];
        assert_eq!(a.shape, vec![2]);
        assert_eq!(a.data, vec![1.5, -2.0]);
        assert!(describe_checkpoint(&ck).contains("A/kernel"));
    }

    #[test]
    fn f16_converted() {
        let data: Vec<u8> = [half::f16::from_f32(0.5), half::f16::from_f32(-3.0)]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let p = load_official_pkl(&tiny("f2", &data, "params"), WeightsSlot::Params).unwrap();
        assert_eq!(p["A/kernel"].data, vec![0.5, -3.0]);
    }

    #[test]
    fn integer_params_refused() {
        let e = load_official_pkl(&tiny("i4", &[0; 8], "params"), WeightsSlot::Params).unwrap_err();
        assert!(matches!(e, CheckpointError::NotFloat { .. }), "{e}");
        assert!(e.to_string().contains("A/kernel"), "{e}");
    }

    #[test]
    fn missing_slot_names_keys() {
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let bytes = tiny("f4", &data, "weights");
        let e = load_official_pkl(&bytes, WeightsSlot::Params).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, CheckpointError::MissingKey { key: "params", .. }),
            "{msg}"
        );
        assert!(msg.contains("weights, step"), "{msg}");
        let e = load_official_pkl(&bytes, WeightsSlot::ParamsEma).unwrap_err();
        assert!(e.to_string().contains("params_ema"), "{e}");
    }

    #[test]
    fn not_a_dict_and_truncated() {
        // A pickled list.
        let e = load_official_pkl(&[0x80u8, 4, b']', b'.'][..], WeightsSlot::Params).unwrap_err();
        assert!(matches!(e, CheckpointError::NotADict { .. }), "{e}");
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let bytes = tiny("f4", &data, "params");
        let e = load_official_pkl(&bytes[..bytes.len() - 1], WeightsSlot::Params).unwrap_err();
        assert!(e.to_string().contains("without a STOP"), "{e}");
    }

    #[test]
    fn missing_file_is_io_error() {
        let e = load_official_pkl("/nonexistent/x.pkl", WeightsSlot::Params).unwrap_err();
        assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    }
}
