//! Where a host runs its nodes: the device and the directories, owned, and lent to plugins as the
//! contract's [`HostContext`] when they describe, validate and run nodes.

use std::path::{Path, PathBuf};

use abi_stable::std_types::RStr;
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
}

impl Default for HostDirs {
    /// `cpu`, and `models`, `input`, `output`, `temp` in the current directory.
    fn default() -> Self {
        HostDirs {
            device: "cpu".into(),
            models_dir: PathBuf::from("models"),
            input_dir: PathBuf::from("input"),
            output_dir: PathBuf::from("output"),
            temp_dir: PathBuf::from("temp"),
        }
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
        }
    }

    pub fn context(&self) -> HostContext<'_> {
        HostContext {
            device: RStr::from_str(&self.device),
            models_dir: RStr::from_str(&self.models_dir),
            input_dir: RStr::from_str(&self.input_dir),
            output_dir: RStr::from_str(&self.output_dir),
            temp_dir: RStr::from_str(&self.temp_dir),
        }
    }
}
