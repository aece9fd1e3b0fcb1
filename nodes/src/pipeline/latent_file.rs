//! ComfyUI `.latent` files: a safetensors file holding `latent_tensor` (NCHW, raw VAE space) and the empty marker
//! tensor `latent_format_version_0`; files without the marker are old-format latents stored ×0.18215.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use odelt_contract::paths::{self, Folder, LinkPolicy, PathError};

use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};

use super::array::Array;
use crate::error::{Error, Result};

/// The tensor holding the latent.
pub const LATENT_KEY: &str = "latent_tensor";
/// The marker of the current format (absent in old files, whose values are scaled by 0.18215).
pub const VERSION_MARKER: &str = "latent_format_version_0";
/// Factor old-format files were stored with.
const OLD_FORMAT_SCALE: f32 = 0.18215;

fn file_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: msg.to_string(),
    }
}

/// The folders LoadLatent reads from: the host's input folder and, through ComfyUI's annotated names
/// (`name [output]`, `name [temp]`), the folders the host's output nodes write.
#[derive(Debug, Clone, Copy)]
pub struct LatentDirs<'a> {
    /// User inputs: where plain names are looked up.
    pub input: &'a Path,
    /// Final outputs (`name [output]`, where SaveLatent writes).
    pub output: &'a Path,
    /// Temporary outputs (`name [temp]`).
    pub temp: &'a Path,
}

/// Where LoadLatent finds `name`, as ComfyUI's `folder_paths.get_annotated_filepath` does: a name relative to the
/// input folder, or to the output or temp folder when annotated `[output]`/`[temp]` (`latents/a_00001_.latent
/// [output]`). Absolute names and `..` are refused, and so is a symbolic link below the folder that leads out of
/// it (links that stay inside are followed). Errors name the file as given and the folder by its role, never by
/// where it is on the machine.
pub fn resolve_latent_file(dirs: &LatentDirs<'_>, name: &str) -> Result<PathBuf> {
    if name.trim().is_empty() {
        return Err(Error::Invalid("no .latent file given".into()));
    }
    let (rel, folder) = paths::split_annotation(name);
    let folder = folder.unwrap_or(Folder::Input);
    let base = match folder {
        Folder::Input => dirs.input,
        Folder::Output => dirs.output,
        Folder::Temp => dirs.temp,
    };
    let role = folder.as_str();
    let parts = paths::check_relative(rel).map_err(|e| {
        Error::Invalid(match e {
            PathError::Absolute { .. } => format!(
                "latent file {name:?} is an absolute path; LoadLatent reads only from the {role} directory: give a \
                 name relative to it (with `odelt run`, point --input-dir at the file's folder)"
            ),
            PathError::ParentDir { .. } => format!(
                "latent file {name:?} contains `..`; names must stay inside the {role} directory"
            ),
            other => format!("latent file {other}"),
        })
    })?;
    if parts.is_empty() {
        return Err(Error::Invalid(format!(
            "latent file {name:?} names no file in the {role} directory"
        )));
    }
    paths::resolve_file_under(base, &parts, LinkPolicy::FollowInside).map_err(|e| {
        Error::Invalid(match e {
            PathError::NotFound { .. } => {
                format!("latent file {name:?} not found in the {role} directory")
            }
            PathError::OutsideBase { .. } | PathError::Symlink { .. } => format!(
                "latent file {name:?} leads outside the {role} directory through a symbolic link; refused"
            ),
            PathError::NotAFile { .. } => {
                format!("latent file {name:?} is not a file in the {role} directory")
            }
            PathError::BaseUnavailable { .. } => format!(
                "the {role} directory is not available, so latent file {name:?} cannot be read"
            ),
            other => format!("latent file {other}"),
        })
    })
}

/// Writes `latent` (NCHW f32) with `metadata` (ComfyUI puts `prompt` and the `extra_pnginfo` entries there).
pub fn write_latent(path: &Path, latent: &Array, metadata: &[(String, String)]) -> Result<()> {
    latent.dims4("LATENT", "[B, C, H, W]")?;
    let bytes: Vec<u8> = latent.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let main = TensorView::new(StDtype::F32, latent.shape.clone(), &bytes)
        .map_err(|e| file_err(path, format!("latent tensor: {e}")))?;
    let marker = TensorView::new(StDtype::F32, vec![0], &[])
        .map_err(|e| file_err(path, format!("format marker: {e}")))?;
    let meta: HashMap<String, String> = metadata.iter().cloned().collect();
    let meta = if meta.is_empty() { None } else { Some(meta) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // Written under a temporary name and renamed when complete, as the PNGs are.
    crate::pipeline::png::write_atomically(path, |tmp| {
        safetensors::serialize_to_file([(LATENT_KEY, main), (VERSION_MARKER, marker)], meta, tmp)
            .map_err(|e| file_err(path, format!("write failed: {e}")))
    })
}

/// Reads a `.latent` file as NCHW f32 raw latents (old-format files are divided by 0.18215, as ComfyUI does).
pub fn read_latent(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| file_err(path, format!("not a .latent (safetensors) file: {e}")))?;
    let view = st
        .tensor(LATENT_KEY)
        .map_err(|_| file_err(path, format!("no `{LATENT_KEY}` tensor in the file")))?;
    let shape = view.shape().to_vec();
    if shape.len() != 4 {
        return Err(file_err(
            path,
            format!("`{LATENT_KEY}` has shape {shape:?}; expected [B, C, H, W]"),
        ));
    }
    let raw = view.data();
    let mut data: Vec<f32> = match view.dtype() {
        StDtype::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        StDtype::F16 => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StDtype::BF16 => raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StDtype::F64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => {
            return Err(file_err(
                path,
                format!("`{LATENT_KEY}` has dtype {other:?}; expected a float type"),
            ))
        }
    };
    if st.tensor(VERSION_MARKER).is_err() {
        for v in &mut data {
            *v /= OLD_FORMAT_SCALE;
        }
    }
    Array::new(shape, data)
}

/// Shape of the latent in a `.latent` file without decoding its values (for validation).
pub fn latent_shape(path: &Path) -> Result<Vec<usize>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| file_err(path, format!("not a .latent (safetensors) file: {e}")))?;
    meta.tensors()
        .get(LATENT_KEY)
        .map(|info| info.shape.clone())
        .ok_or_else(|| file_err(path, format!("no `{LATENT_KEY}` tensor in the file")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_old_format() {
        let dir = std::env::temp_dir().join(format!("odelt-latent-{}", std::process::id()));
        let p = dir.join("sub/x.latent");
        let a = Array::new(vec![1, 2, 1, 2], vec![1.0, -2.0, 3.5, 0.25]).unwrap();
        write_latent(&p, &a, &[("prompt".into(), "{}".into())]).unwrap();
        assert_eq!(read_latent(&p).unwrap(), a);
        assert_eq!(latent_shape(&p).unwrap(), vec![1, 2, 1, 2]);
        let bytes = std::fs::read(&p).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["prompt"], "{}");

        // An old-format file: no marker, values stored x0.18215.
        let old = dir.join("old.latent");
        let vals: Vec<u8> = [0.18215f32, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view = TensorView::new(StDtype::F32, vec![1, 1, 1, 2], &vals).unwrap();
        safetensors::serialize_to_file([(LATENT_KEY, view)], None, &old).unwrap();
        let r = read_latent(&old).unwrap();
        assert!((r.data[0] - 1.0).abs() < 1e-6);

        std::fs::write(dir.join("bad.latent"), b"nope").unwrap();
        assert!(read_latent(&dir.join("bad.latent")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[test]
    fn names_resolve_in_the_input_folder_or_the_annotated_one() {
        let root = std::env::temp_dir().join(format!("odelt-latent-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (input, output, temp) = (root.join("in"), root.join("out"), root.join("tmp"));
        for (d, f) in [
            (&input, "sub/a.latent"),
            (&output, "latents/b.latent"),
            (&temp, "c.latent"),
        ] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), b"x").unwrap();
        }
        std::fs::write(root.join("secret.latent"), b"s").unwrap();
        let dirs = LatentDirs {
            input: &input,
            output: &output,
            temp: &temp,
        };
        let ok = |n: &str| resolve_latent_file(&dirs, n).unwrap();
        assert!(ok("sub/a.latent").ends_with("in/sub/a.latent"));
        assert!(ok("latents/b.latent [output]").ends_with("out/latents/b.latent"));
        assert!(ok("c.latent [temp]").ends_with("tmp/c.latent"));
        assert!(ok("sub/a.latent [input]").ends_with("in/sub/a.latent"));
        let err = |n: &str| resolve_latent_file(&dirs, n).unwrap_err().to_string();
        let abs = root.join("secret.latent").display().to_string();
        for (name, want) in [
            (abs.as_str(), "absolute"),
            ("../secret.latent", "`..`"),
            ("sub/../../secret.latent", "`..`"),
            ("latents/b.latent", "not found in the input directory"),
            ("b.latent [output]", "not found in the output directory"),
            ("%2e%2e%2fsecret.latent", "not found"),
            ("", "no .latent file"),
            (" [output]", "names no file"),
        ] {
            let e = err(name);
            assert!(e.contains(want), "{name:?}: {e}");
            if !name.starts_with('/') {
                assert!(
                    !e.contains(&*root.to_string_lossy()),
                    "no machine paths: {e}"
                );
            }
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("secret.latent"), input.join("link.latent"))
                .unwrap();
            std::os::unix::fs::symlink(input.join("sub"), input.join("inside")).unwrap();
            let e = err("link.latent");
            assert!(e.contains("leads outside the input directory"), "{e}");
            assert!(ok("inside/a.latent").ends_with("in/sub/a.latent"));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
