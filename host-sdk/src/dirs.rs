//! Where a host runs its nodes: the device and the directories, owned, and lent to plugins as the
//! contract's [`HostContext`] when they describe, validate and run nodes; and the extra model folders of
//! ComfyUI's `extra_model_paths.yaml` ([`ExtraModelDirs`]).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use abi_stable::std_types::RStr;
use odelt_contract::context::encode_extra_model_dirs;
use odelt_contract::HostContext;

/// The device and directories a host gives its plugins. One value describes a host everywhere:
/// the node descriptors (combo lists of model files), validation and execution all see the
/// same directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDirs {
    /// The device of device-bound nodes (`"cpu"`, `"cuda:0"`).
    pub device: String,
    /// Root of model files.
    pub models_dir: PathBuf,
    /// User inputs (uploads, files to load).
    pub input_dir: PathBuf,
    /// Where output nodes write (ComfyUI's `output/`).
    pub output_dir: PathBuf,
    /// Where preview nodes write (ComfyUI's `temp/`).
    pub temp_dir: PathBuf,
    /// Model folders besides `models_dir`, per kind.
    pub extra_model_dirs: ExtraModelDirs,
}

impl Default for HostDirs {
    /// `cpu`, and `models`, `input`, `output`, `temp` in the current directory; no extra model
    /// folders.
    fn default() -> Self {
        HostDirs {
            device: "cpu".into(),
            models_dir: PathBuf::from("models"),
            input_dir: PathBuf::from("input"),
            output_dir: PathBuf::from("output"),
            temp_dir: PathBuf::from("temp"),
            extra_model_dirs: ExtraModelDirs::default(),
        }
    }
}

/// Model folders besides the models directory, per kind of model file (ComfyUI's folder names:
/// `checkpoints`, `vae`, `loras`, ...), each list in the order it was given. Plugins search them
/// after the models directory ([`HostContext::extra_model_dirs`]); the odelt plugin reads
/// `checkpoints` and `vae`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtraModelDirs {
    /// Kind → folders.
    pub folders: BTreeMap<String, Vec<PathBuf>>,
}

/// Why an `extra_model_paths.yaml` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExtraModelPathsError {
    /// The file could not be read.
    #[error("cannot read the extra model paths file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("the extra model paths file {} is not valid YAML: {message}", .path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The YAML is not shaped like ComfyUI's `extra_model_paths.yaml`.
    #[error("the extra model paths file {}: {message}", .path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// What was wrong, naming the section and key.
        message: String,
    },
}

impl ExtraModelDirs {
    /// Reads ComfyUI's `extra_model_paths.yaml` format.
    pub fn load(path: &Path) -> Result<Self, ExtraModelPathsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExtraModelPathsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = abs.parent().unwrap_or(Path::new("/"));
        Self::from_yaml(&text, dir).map_err(|e| match e {
            ExtraModelPathsError::Yaml { message, .. } => ExtraModelPathsError::Yaml {
                path: path.to_path_buf(),
                message,
            },
            ExtraModelPathsError::Shape { message, .. } => ExtraModelPathsError::Shape {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses the YAML of an `extra_model_paths.yaml` whose folder is `yaml_dir`, as ComfyUI's
    /// `load_extra_path_config` does: each top-level section may give a `base_path` (`~` and
    /// `$VAR`/`${VAR}` expanded; relative to `yaml_dir` when relative); every other key is a kind
    /// whose value holds folders, one per line (or a list), joined to the base path (or, without
    /// one, to `yaml_dir`) and normalized. `is_default` is accepted and ignored (the models
    /// directory is always searched first). Empty sections are skipped.
    pub fn from_yaml(text: &str, yaml_dir: &Path) -> Result<Self, ExtraModelPathsError> {
        use serde_yaml_ng::Value;
        let shape = |message: String| ExtraModelPathsError::Shape {
            path: PathBuf::new(),
            message,
        };
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| ExtraModelPathsError::Yaml {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let mut out = ExtraModelDirs::default();
        let sections = match doc {
            Value::Null => return Ok(out),
            Value::Mapping(m) => m,
            _ => return Err(shape("expected a mapping of sections at the top".into())),
        };
        for (name, conf) in sections {
            let section = yaml_key(&name);
            let conf = match conf {
                Value::Null => continue,
                Value::Mapping(m) => m,
                _ => return Err(shape(format!("section {section:?} is not a mapping"))),
            };
            let base = match conf.get("base_path") {
                None | Some(Value::Null) => None,
                Some(Value::String(b)) => {
                    let b = PathBuf::from(expand(b));
                    Some(if b.is_absolute() { b } else { yaml_dir.join(b) })
                }
                Some(_) => {
                    return Err(shape(format!(
                        "section {section:?}: base_path must be a string"
                    )))
                }
            };
            for (key, value) in &conf {
                let kind = yaml_key(key);
                if kind == "base_path" || kind == "is_default" {
                    continue;
                }
                let lines: Vec<String> = match value {
                    Value::Null => continue,
                    Value::String(s) => s.lines().map(str::to_string).collect(),
                    Value::Sequence(items) => items
                        .iter()
                        .map(|v| match v {
                            Value::String(s) => Ok(s.clone()),
                            _ => Err(shape(format!(
                                "section {section:?}: the folders of {kind:?} must be strings"
                            ))),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(shape(format!(
                        "section {section:?}: {kind:?} must be a folder (or several, one per line)"
                    )))
                    }
                };
                for line in lines {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    let p = Path::new(line);
                    let full = match &base {
                        Some(b) => b.join(p),
                        None if p.is_absolute() => p.to_path_buf(),
                        None => yaml_dir.join(p),
                    };
                    let dirs = out.folders.entry(kind.clone()).or_default();
                    let full = normalize(&full);
                    if !dirs.contains(&full) {
                        dirs.push(full);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The folders of one kind (none when not given).
    pub fn of(&self, kind: &str) -> &[PathBuf] {
        self.folders.get(kind).map_or(&[], Vec::as_slice)
    }

    /// Whether no folder is given.
    pub fn is_empty(&self) -> bool {
        self.folders.values().all(Vec::is_empty)
    }
}

fn yaml_key(v: &serde_yaml_ng::Value) -> String {
    match v {
        serde_yaml_ng::Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// `os.path.expanduser(os.path.expandvars(s))`: a leading `~` becomes `$HOME`; `$VAR` and `${VAR}`
/// become the variable's value (unset ones are left as written).
fn expand(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match (name.is_empty(), std::env::var(name)) {
            (false, Ok(v)) => out.push_str(&v),
            _ => out.push_str(&rest[i..i + 1 + len]),
        }
        rest = &rest[i + 1 + len..];
    }
    out.push_str(rest);
    match (out.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(tail), Some(home)) if tail.is_empty() || tail.starts_with(['/', '\\']) => {
            format!("{}{tail}", home.to_string_lossy())
        }
        _ => out,
    }
}

/// `os.path.normpath`: drops `.` and folds `..` lexically (links are not resolved).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl HostDirs {
    /// Calls `f` with these directories as the contract's [`HostContext`] (paths made absolute), e.g. for a
    /// [`crate::node_call::CallSite`].
    pub fn with_context<R>(&self, f: impl FnOnce(&HostContext<'_>) -> R) -> R {
        f(&HostStrings::of(self).context())
    }
}

/// [`HostDirs`] as the strings a [`HostContext`] borrows (paths made absolute, so a plugin's
/// view does not depend on the working directory of the thread that asks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostStrings {
    pub device: String,
    pub models_dir: String,
    pub input_dir: String,
    pub output_dir: String,
    pub temp_dir: String,
    pub extra_model_dirs: String,
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

impl HostStrings {
    pub fn of(d: &HostDirs) -> Self {
        HostStrings {
            device: d.device.clone(),
            models_dir: absolute(&d.models_dir),
            input_dir: absolute(&d.input_dir),
            output_dir: absolute(&d.output_dir),
            temp_dir: absolute(&d.temp_dir),
            extra_model_dirs: encode_extra_model_dirs(
                d.extra_model_dirs
                    .folders
                    .iter()
                    .map(|(kind, dirs)| (kind.as_str(), dirs.as_slice())),
            ),
        }
    }

    pub fn context(&self) -> HostContext<'_> {
        HostContext {
            device: RStr::from_str(&self.device),
            models_dir: RStr::from_str(&self.models_dir),
            input_dir: RStr::from_str(&self.input_dir),
            output_dir: RStr::from_str(&self.output_dir),
            temp_dir: RStr::from_str(&self.temp_dir),
            extra_model_dirs: RStr::from_str(&self.extra_model_dirs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comfyui_extra_model_paths_are_read() {
        let yaml = r#"
comfyui:
    base_path: /srv/comfy/
    is_default: true
    checkpoints: models/checkpoints/
    vae: models/vae/
    loras: |
         models/loras
         models/other_loras
a111:
    base_path: ../webui
    checkpoints: models/Stable-diffusion
    vae: /abs/VAE
empty:
plain:
    checkpoints: ./here/../ckpts
"#;
        let d = ExtraModelDirs::from_yaml(yaml, Path::new("/etc/odelt")).unwrap();
        assert_eq!(
            d.of("checkpoints"),
            [
                PathBuf::from("/srv/comfy/models/checkpoints"),
                PathBuf::from("/etc/webui/models/Stable-diffusion"),
                PathBuf::from("/etc/odelt/ckpts"),
            ]
        );
        assert_eq!(
            d.of("vae"),
            [
                PathBuf::from("/srv/comfy/models/vae"),
                PathBuf::from("/abs/VAE")
            ]
        );
        assert_eq!(d.of("loras").len(), 2);
        assert!(d.of("unet").is_empty());
        let strings = HostStrings::of(&HostDirs {
            extra_model_dirs: d.clone(),
            ..HostDirs::default()
        });
        assert_eq!(
            strings.context().extra_model_dirs("checkpoints"),
            d.of("checkpoints")
        );
        assert!(ExtraModelDirs::from_yaml("", Path::new("/"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_files_name_what_is_wrong() {
        let e = ExtraModelDirs::from_yaml("a: [1, 2", Path::new("/")).unwrap_err();
        assert!(matches!(e, ExtraModelPathsError::Yaml { .. }), "{e}");
        let e = ExtraModelDirs::from_yaml("- x", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("mapping"), "{e}");
        let e = ExtraModelDirs::from_yaml("s:\n  checkpoints: 3", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("\"checkpoints\""), "{e}");
        let missing = Path::new("/no/such/extra_model_paths.yaml");
        let e = ExtraModelDirs::load(missing).unwrap_err();
        assert!(e.to_string().contains("extra_model_paths.yaml"), "{e}");
    }

    #[test]
    fn variables_and_home_are_expanded() {
        std::env::set_var("ODELT_TEST_EXPAND", "/x");
        assert_eq!(expand("$ODELT_TEST_EXPAND/a"), "/x/a");
        assert_eq!(expand("${ODELT_TEST_EXPAND}b"), "/xb");
        assert_eq!(expand("$ODELT_TEST_UNSET_VAR/a"), "$ODELT_TEST_UNSET_VAR/a");
        assert_eq!(expand("a$"), "a$");
        assert_eq!(expand("${open"), "${open");
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(expand("~/m"), format!("{}/m", home.to_string_lossy()));
        }
        assert_eq!(expand("~user/m"), "~user/m");
    }
}
