//! The execution context the host passes to every node call.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use abi_stable::{
    std_types::{ROption, RSlice, RStr},
    StableAbi,
};

use crate::error::NodeError;

/// Encoding of a [`PreviewImage`]'s bytes.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewFormat {
    /// Raw 8-bit RGB pixels, `width * height * 3` bytes, row-major (the host encodes it).
    Rgb8 = 0,
    /// An encoded PNG file.
    Png = 1,
    /// An encoded JPEG file.
    Jpeg = 2,
}

/// A preview picture sent with a progress update (e.g. a cheap latent→RGB decode).
/// The host copies the bytes before the call returns.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PreviewImage<'a> {
    /// How `data` is encoded.
    pub format: PreviewFormat,
    /// Width in pixels (informative for PNG/JPEG).
    pub width: u32,
    /// Height in pixels (informative for PNG/JPEG).
    pub height: u32,
    /// The pixels or the encoded file.
    pub data: RSlice<'a, u8>,
}

impl<'a> PreviewImage<'a> {
    /// Raw RGB8 pixels (`data.len()` must be `width * height * 3`).
    pub fn rgb8(width: u32, height: u32, data: &'a [u8]) -> Self {
        PreviewImage {
            format: PreviewFormat::Rgb8,
            width,
            height,
            data: RSlice::from_slice(data),
        }
    }
}

/// Host callbacks behind an [`ExecContext`]: an opaque pointer plus `extern "C"` functions.
///
/// Plugins never call these directly; they use [`ExecContext`]'s methods. Hosts build them
/// with [`HostHooks::new`]; tests use [`HostHooks::noop`] or [`HostHooks::cancel_flag`].
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostHooks<'a> {
    data: *const (),
    progress:
        extern "C" fn(data: *const (), value: u64, max: u64, preview: ROption<PreviewImage<'_>>),
    is_cancelled: extern "C" fn(data: *const ()) -> bool,
    text: extern "C" fn(data: *const (), text: RStr<'_>),
    _lifetime: PhantomData<&'a ()>,
}

// SAFETY: the constructor's contract requires the callbacks to be callable from any thread
// with `data` (HostHooks::new is unsafe for that reason); noop/cancel_flag satisfy it.
unsafe impl Send for HostHooks<'_> {}
unsafe impl Sync for HostHooks<'_> {}

extern "C" fn noop_progress(_: *const (), _: u64, _: u64, _: ROption<PreviewImage<'_>>) {}
extern "C" fn never_cancelled(_: *const ()) -> bool {
    false
}
extern "C" fn noop_text(_: *const (), _: RStr<'_>) {}
extern "C" fn flag_cancelled(data: *const ()) -> bool {
    // SAFETY: cancel_flag() stores a `&'a AtomicBool` that outlives the hooks.
    unsafe { (*(data as *const AtomicBool)).load(Ordering::Relaxed) }
}

impl<'a> HostHooks<'a> {
    /// Builds hooks from an opaque pointer and callbacks.
    ///
    /// # Safety
    /// `data` must stay valid for `'a`, and every callback must be safe to call with `data`
    /// from any thread, concurrently, and must not unwind.
    pub unsafe fn new(
        data: *const (),
        progress: extern "C" fn(*const (), u64, u64, ROption<PreviewImage<'_>>),
        is_cancelled: extern "C" fn(*const ()) -> bool,
        text: extern "C" fn(*const (), RStr<'_>),
    ) -> Self {
        HostHooks {
            data,
            progress,
            is_cancelled,
            text,
            _lifetime: PhantomData,
        }
    }

    /// Hooks that ignore progress and never cancel (for unit tests of nodes).
    pub fn noop() -> HostHooks<'static> {
        HostHooks {
            data: std::ptr::null(),
            progress: noop_progress,
            is_cancelled: never_cancelled,
            text: noop_text,
            _lifetime: PhantomData,
        }
    }

    /// Hooks that ignore progress and report cancellation when `flag` is set.
    pub fn cancel_flag(flag: &'a AtomicBool) -> HostHooks<'a> {
        HostHooks {
            data: flag as *const AtomicBool as *const (),
            progress: noop_progress,
            is_cancelled: flag_cancelled,
            text: noop_text,
            _lifetime: PhantomData,
        }
    }
}

/// Where the host runs its nodes: the device and the directories nodes read and write. The host
/// fills it for every call that needs it — describing nodes (combo lists of model files),
/// validating them, running them (see [`ExecContext::host`]) — so a plugin never guesses a
/// directory (no environment variables as arguments).
///
/// Plugins must keep every user-given file name inside the directory it belongs to (see
/// [`crate::paths`]).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct HostContext<'a> {
    /// The device the host assigns to device-bound nodes: `"cpu"`, `"cuda:0"`, ...
    pub device: RStr<'a>,
    /// Root directory of model files (checkpoints, VAEs).
    pub models_dir: RStr<'a>,
    /// Directory of user inputs (uploads, files to load).
    pub input_dir: RStr<'a>,
    /// Directory for final outputs (SaveImage-like nodes).
    pub output_dir: RStr<'a>,
    /// Directory for temporary/preview outputs.
    pub temp_dir: RStr<'a>,
    /// Model folders besides `models_dir` (ComfyUI's `extra_model_paths.yaml`), searched after it: a JSON
    /// object from a ComfyUI folder name (`"checkpoints"`, `"vae"`, ...) to a list of absolute directories, or
    /// empty for none. Read it with [`HostContext::extra_model_dirs`].
    pub extra_model_dirs: RStr<'a>,
}

impl HostContext<'_> {
    /// The defaults of a host started in the current directory: device `"cpu"`, directories
    /// `models`, `input`, `output`, `temp`, no extra model folders.
    pub fn detached() -> HostContext<'static> {
        HostContext {
            device: RStr::from_str("cpu"),
            models_dir: RStr::from_str("models"),
            input_dir: RStr::from_str("input"),
            output_dir: RStr::from_str("output"),
            temp_dir: RStr::from_str("temp"),
            extra_model_dirs: RStr::from_str(""),
        }
    }

    /// The extra folders of one kind of model file (a ComfyUI folder name: `"checkpoints"`, `"vae"`), in the
    /// order the host gave them; none when the host gave none (or a value that is not the documented JSON).
    pub fn extra_model_dirs(&self, kind: &str) -> Vec<PathBuf> {
        parse_extra_model_dirs(self.extra_model_dirs.as_str(), kind)
    }
}

/// Encodes extra model folders for [`HostContext::extra_model_dirs`]: `(kind, folders)` pairs as the JSON
/// object the field holds (empty when there are none).
pub fn encode_extra_model_dirs<'k, P: AsRef<Path> + 'k>(
    kinds: impl IntoIterator<Item = (&'k str, &'k [P])>,
) -> String {
    let mut map = serde_json::Map::new();
    for (kind, dirs) in kinds {
        if dirs.is_empty() {
            continue;
        }
        let list: Vec<serde_json::Value> = dirs
            .iter()
            .map(|d| serde_json::Value::String(d.as_ref().to_string_lossy().into_owned()))
            .collect();
        map.insert(kind.to_string(), serde_json::Value::Array(list));
    }
    if map.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(map).to_string()
    }
}

fn parse_extra_model_dirs(json: &str, kind: &str) -> Vec<PathBuf> {
    if json.is_empty() {
        return Vec::new();
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    match map.get(kind) {
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// What a node call gets besides its inputs: where it runs, host information (ComfyUI's
/// hidden inputs), progress reporting and cancellation.
///
/// All strings are borrowed from the host for the duration of the call. Empty strings mean
/// "not provided" (see the `Option`-returning accessors).
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ExecContext<'a> {
    /// The id of the node being run in the prompt (ComfyUI's `UNIQUE_ID`).
    pub node_id: RStr<'a>,
    /// The node's class type.
    pub class_type: RStr<'a>,
    /// The id of the prompt (run) this call belongs to.
    pub prompt_id: RStr<'a>,
    /// The device the host assigned: `"cpu"`, `"cuda:0"`, ...
    pub device: RStr<'a>,
    /// The whole API-format prompt as JSON (ComfyUI's hidden `PROMPT`), to embed in outputs.
    pub prompt_json: RStr<'a>,
    /// The `extra_pnginfo` JSON object (usually `{"workflow": {...}}`), or empty.
    pub extra_pnginfo_json: RStr<'a>,
    /// Directory for final outputs (SaveImage-like nodes).
    pub output_dir: RStr<'a>,
    /// Directory for temporary/preview outputs.
    pub temp_dir: RStr<'a>,
    /// Root directory of model files.
    pub models_dir: RStr<'a>,
    /// Directory of user inputs (uploads, files to load).
    pub input_dir: RStr<'a>,
    /// Host callbacks.
    pub hooks: HostHooks<'a>,
    /// Model folders besides `models_dir` ([`HostContext::extra_model_dirs`]).
    pub extra_model_dirs: RStr<'a>,
}

impl<'a> ExecContext<'a> {
    /// A context with no host behind it: device `"cpu"`, no progress, never cancelled,
    /// directories `output`, `temp`, `models`, `input`. For unit tests of node code.
    pub fn detached() -> ExecContext<'static> {
        ExecContext {
            node_id: RStr::from_str("0"),
            class_type: RStr::from_str(""),
            prompt_id: RStr::from_str(""),
            device: RStr::from_str("cpu"),
            prompt_json: RStr::from_str(""),
            extra_pnginfo_json: RStr::from_str(""),
            output_dir: RStr::from_str("output"),
            temp_dir: RStr::from_str("temp"),
            models_dir: RStr::from_str("models"),
            input_dir: RStr::from_str("input"),
            hooks: HostHooks::noop(),
            extra_model_dirs: RStr::from_str(""),
        }
    }

    /// The device and directories of this call, as the host described them when it validated.
    pub fn host(&self) -> HostContext<'a> {
        HostContext {
            device: self.device,
            models_dir: self.models_dir,
            input_dir: self.input_dir,
            output_dir: self.output_dir,
            temp_dir: self.temp_dir,
            extra_model_dirs: self.extra_model_dirs,
        }
    }

    /// Reports progress `value` of `max` (e.g. the ODE step). Returns
    /// `Err(NodeError::interrupted())` when the host has asked to cancel, so a loop can do
    /// `ctx.progress(i, n)?;` and stop within one step.
    pub fn progress(&self, value: u64, max: u64) -> Result<(), NodeError> {
        (self.hooks.progress)(self.hooks.data, value, max, ROption::RNone);
        self.check_cancelled()
    }

    /// Like [`ExecContext::progress`], with a preview picture.
    pub fn progress_with_preview(
        &self,
        value: u64,
        max: u64,
        preview: PreviewImage<'_>,
    ) -> Result<(), NodeError> {
        (self.hooks.progress)(self.hooks.data, value, max, ROption::RSome(preview));
        self.check_cancelled()
    }

    /// Sends a line of status text (ComfyUI's `progress_text`), e.g. "loading weights".
    pub fn text(&self, text: &str) {
        (self.hooks.text)(self.hooks.data, RStr::from_str(text));
    }

    /// Whether the host asked to stop. Cheap (an atomic load); check it in long loops.
    pub fn is_cancelled(&self) -> bool {
        (self.hooks.is_cancelled)(self.hooks.data)
    }

    /// `Err(NodeError::interrupted())` if the host asked to stop.
    pub fn check_cancelled(&self) -> Result<(), NodeError> {
        if self.is_cancelled() {
            Err(NodeError::interrupted())
        } else {
            Ok(())
        }
    }

    /// The prompt JSON, if the host provided it.
    pub fn prompt(&self) -> Option<&'a str> {
        non_empty(self.prompt_json)
    }

    /// The `extra_pnginfo` JSON, if provided.
    pub fn extra_pnginfo(&self) -> Option<&'a str> {
        non_empty(self.extra_pnginfo_json)
    }

    /// The `workflow` member of `extra_pnginfo` re-serialized as JSON (what SaveImage embeds
    /// as the PNG `workflow` text chunk), if present.
    pub fn workflow_json(&self) -> Option<String> {
        let extra: serde_json::Value = serde_json::from_str(self.extra_pnginfo()?).ok()?;
        extra.get("workflow").map(|w| w.to_string())
    }
}

fn non_empty(s: RStr<'_>) -> Option<&str> {
    if s.is_empty() {
        None
    } else {
        Some(s.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_flag_interrupts_progress() {
        let flag = AtomicBool::new(false);
        let mut ctx = ExecContext::detached();
        ctx.hooks = HostHooks::cancel_flag(&flag);
        assert!(ctx.progress(1, 10).is_ok());
        flag.store(true, Ordering::Relaxed);
        let err = ctx.progress(2, 10).unwrap_err();
        assert!(err.is_interrupted());
    }

    #[test]
    fn extra_model_dirs_round_trip() {
        let ck = [PathBuf::from("/a/ckpts"), PathBuf::from("/b/models")];
        let none: [PathBuf; 0] = [];
        let json = encode_extra_model_dirs([("checkpoints", &ck[..]), ("vae", &none[..])]);
        let mut host = HostContext::detached();
        assert!(host.extra_model_dirs("checkpoints").is_empty());
        host.extra_model_dirs = RStr::from_str(&json);
        assert_eq!(host.extra_model_dirs("checkpoints"), ck);
        assert!(host.extra_model_dirs("vae").is_empty());
        assert_eq!(encode_extra_model_dirs([("vae", &none[..])]), "");
        host.extra_model_dirs = RStr::from_str("not json");
        assert!(host.extra_model_dirs("checkpoints").is_empty());
    }

    #[test]
    fn workflow_is_extracted_from_extra_pnginfo() {
        let mut ctx = ExecContext::detached();
        ctx.extra_pnginfo_json = RStr::from_str(r#"{"workflow":{"nodes":[]}}"#);
        assert_eq!(ctx.workflow_json().as_deref(), Some(r#"{"nodes":[]}"#));
        assert_eq!(ExecContext::detached().workflow_json(), None);
    }
}
