//! Model files under the models directory (and the extra model folders a host gives, ComfyUI's
//! `extra_model_paths.yaml`): the choices a loader node offers, and turning a user-given name back into a path.
//!
//! Names are relative, `/`-separated paths (`fashion-dit.safetensors`, `checkpoints/imagenet.pkl`,
//! `vae/sd-vae-ft-mse.safetensors`). A name is refused when it is absolute or contains `..`. The models directory
//! is the user's own folder (nothing writes there), so symbolic links in it are followed wherever they lead
//! ([`odelt_contract::paths`] with [`LinkPolicy::Follow`]): a checkpoint kept once on disk and linked into several
//! tools' model folders loads.
//!
//! Extra folders hold one kind of file each (ComfyUI's `checkpoints: path/to/ckpts`); names in them are relative
//! to the folder, and they are searched after the models directory ([`locate`]).

use std::path::{Path, PathBuf};

use odelt_contract::paths::{self, LinkPolicy, PathError};

use crate::error::{Error, Result};

/// Environment variable naming the models directory (used when the host gives none).
pub const MODELS_DIR_ENV: &str = "ODELT_MODELS_DIR";

/// File extensions of checkpoints: the project's safetensors and the official pickles.
pub const CHECKPOINT_EXTENSIONS: &[&str] = &["safetensors", "pkl"];
/// Sub-directories (besides the models directory itself) searched for checkpoints.
pub const CHECKPOINT_SUBDIRS: &[&str] = &["checkpoints"];
/// File extensions of VAEs.
pub const VAE_EXTENSIONS: &[&str] = &["safetensors"];
/// Sub-directories (besides the models directory itself) searched for VAEs.
pub const VAE_SUBDIRS: &[&str] = &["vae"];

/// How deep listings descend into a sub-directory.
const MAX_LIST_DEPTH: usize = 4;

/// The models directory when nothing more specific is known: `$ODELT_MODELS_DIR`, else `models`.
pub fn default_models_dir() -> PathBuf {
    match std::env::var_os(MODELS_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("models"),
    }
}

/// The models directory to use for a call: the host's (when given) or [`default_models_dir`].
pub fn models_dir_or_default(host_dir: &str) -> PathBuf {
    if host_dir.is_empty() {
        default_models_dir()
    } else {
        PathBuf::from(host_dir)
    }
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn walk(dir: &Path, rel: &str, depth: usize, exts: &[&str], out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel_name = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        // metadata() follows symlinks: a link to a file counts as a file (it is checked again on use).
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        if md.is_file() && has_extension(&path, exts) {
            out.push(rel_name);
        } else if md.is_dir() && depth > 0 {
            walk(&path, &rel_name, depth - 1, exts, out);
        }
    }
}

/// Lists files with one of `exts` directly in `models_dir` and anywhere (a few levels deep) under each of
/// `subdirs`, as sorted, de-duplicated relative names. A missing directory lists nothing.
pub fn list_files(models_dir: &Path, subdirs: &[&str], exts: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    walk(models_dir, "", 0, exts, &mut out);
    for sub in subdirs {
        walk(&models_dir.join(sub), sub, MAX_LIST_DEPTH, exts, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// [`list_files`] of `models_dir`, and every file with one of `exts` (a few levels deep) in each of the `extra`
/// folders, named relative to its folder; sorted, de-duplicated.
pub fn list_files_with(
    models_dir: &Path,
    extra: &[PathBuf],
    subdirs: &[&str],
    exts: &[&str],
) -> Vec<String> {
    let mut out = list_files(models_dir, subdirs, exts);
    for dir in extra {
        walk(dir, "", MAX_LIST_DEPTH, exts, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// ComfyUI's folder name of checkpoints (the key of `extra_model_paths.yaml` and of
/// [`odelt_contract::HostContext::extra_model_dirs`]).
pub const CHECKPOINTS_KIND: &str = "checkpoints";
/// ComfyUI's folder name of VAEs.
pub const VAE_KIND: &str = "vae";

/// Checkpoint choices under `models_dir` and the extra checkpoint folders.
pub fn list_checkpoints_with(models_dir: &Path, extra: &[PathBuf]) -> Vec<String> {
    list_files_with(models_dir, extra, CHECKPOINT_SUBDIRS, CHECKPOINT_EXTENSIONS)
}

/// VAE choices under `models_dir` and the extra VAE folders.
pub fn list_vaes_with(models_dir: &Path, extra: &[PathBuf]) -> Vec<String> {
    list_files_with(models_dir, extra, VAE_SUBDIRS, VAE_EXTENSIONS)
}

/// [`locate`] for checkpoints: the folder to open `name` from, and the file.
pub fn locate_checkpoint(
    models_dir: &Path,
    extra: &[PathBuf],
    name: &str,
) -> Result<(PathBuf, PathBuf)> {
    locate(models_dir, extra, name, CHECKPOINT_SUBDIRS, "checkpoint")
}

/// [`locate`] for VAEs.
pub fn locate_vae(models_dir: &Path, extra: &[PathBuf], name: &str) -> Result<(PathBuf, PathBuf)> {
    locate(models_dir, extra, name, VAE_SUBDIRS, "VAE")
}

/// Checkpoint choices under `models_dir`.
pub fn list_checkpoints(models_dir: &Path) -> Vec<String> {
    list_files(models_dir, CHECKPOINT_SUBDIRS, CHECKPOINT_EXTENSIONS)
}

/// VAE choices under `models_dir`.
pub fn list_vaes(models_dir: &Path) -> Vec<String> {
    list_files(models_dir, VAE_SUBDIRS, VAE_EXTENSIONS)
}

/// Checks the shape of a name without touching the file system: non-empty, relative, no `..`.
pub fn check_name(name: &str, what: &str) -> Result<()> {
    name_parts(name, what).map(|_| ())
}

/// [`check_name`], returning the name's components.
fn name_parts(name: &str, what: &str) -> Result<Vec<String>> {
    if name.trim().is_empty() {
        return Err(Error::invalid(format!("no {what} name given")));
    }
    paths::check_relative(name).map_err(|e| {
        Error::invalid(match e {
            PathError::Nul { .. } => format!("{what} name {name:?} contains a NUL byte"),
            PathError::Absolute { .. } => format!(
                "{what} name {name:?} is an absolute path; give a name relative to the models directory"
            ),
            PathError::ParentDir { .. } => format!(
                "{what} name {name:?} contains `..`: names must stay inside the models directory"
            ),
            other => format!("{what} name {other}"),
        })
    })
}

/// What looking a name up in one folder found.
enum Lookup {
    Found(PathBuf),
    Missing,
    /// The folder itself cannot be read.
    NoFolder(std::io::Error),
}

/// Looks `parts` up directly in `root`, then under each of `subdirs`.
fn lookup(
    root: &Path,
    parts: &[String],
    subdirs: &[&str],
    name: &str,
    what: &str,
) -> Result<Lookup> {
    let candidates = std::iter::once("").chain(subdirs.iter().copied());
    for sub in candidates {
        let rel: Vec<&str> = sub
            .split('/')
            .filter(|s| !s.is_empty())
            .chain(parts.iter().map(String::as_str))
            .collect();
        match paths::resolve_file_under(root, &rel, LinkPolicy::Follow) {
            Ok(real) => return Ok(Lookup::Found(real)),
            Err(PathError::NotFound { .. }) => continue,
            Err(PathError::BaseUnavailable { source, .. }) => return Ok(Lookup::NoFolder(source)),
            Err(PathError::NotAFile { .. }) => {
                return Err(Error::invalid(format!("{what} {name:?} is not a file")))
            }
            Err(other) => return Err(Error::invalid(format!("{what} {other}"))),
        }
    }
    Ok(Lookup::Missing)
}

/// Resolves `name` to an existing file under `models_dir` (tried as given, then under each of `subdirs`),
/// following symbolic links. Fails when the name is malformed ([`check_name`]) or names no file.
pub fn resolve(models_dir: &Path, name: &str, subdirs: &[&str], what: &str) -> Result<PathBuf> {
    locate(models_dir, &[], name, subdirs, what).map(|(_, path)| path)
}

/// Finds `name` under `models_dir` (as given, then under each of `subdirs`), else in the first of the `extra`
/// folders that has it (relative to the folder). Returns the folder that holds it — the one to open it from as
/// the models directory, where [`resolve`] finds the same file — and the file.
pub fn locate(
    models_dir: &Path,
    extra: &[PathBuf],
    name: &str,
    subdirs: &[&str],
    what: &str,
) -> Result<(PathBuf, PathBuf)> {
    let parts = name_parts(name, what)?;
    match lookup(models_dir, &parts, subdirs, name, what)? {
        Lookup::Found(p) => return Ok((models_dir.to_path_buf(), p)),
        Lookup::Missing => {}
        Lookup::NoFolder(source) if extra.is_empty() => {
            return Err(Error::invalid(format!(
                "models directory {} is not readable ({source}); {what} {name:?} cannot be found",
                models_dir.display()
            )))
        }
        Lookup::NoFolder(_) => {}
    }
    for dir in extra {
        if let Lookup::Found(p) = lookup(dir, &parts, &[], name, what)? {
            return Ok((dir.clone(), p));
        }
    }
    let looked: Vec<String> = std::iter::once(models_dir.display().to_string())
        .chain(
            subdirs
                .iter()
                .map(|s| models_dir.join(s).display().to_string()),
        )
        .chain(extra.iter().map(|d| d.display().to_string()))
        .collect();
    Err(Error::invalid(format!(
        "{what} {name:?} not found (looked in {})",
        looked.join(", ")
    )))
}

/// [`resolve`] for checkpoints.
pub fn resolve_checkpoint(models_dir: &Path, name: &str) -> Result<PathBuf> {
    resolve(models_dir, name, CHECKPOINT_SUBDIRS, "checkpoint")
}

/// [`resolve`] for VAEs.
pub fn resolve_vae(models_dir: &Path, name: &str) -> Result<PathBuf> {
    resolve(models_dir, name, VAE_SUBDIRS, "VAE")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("odelt-models-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lists_checkpoints_and_vaes() {
        let d = tmp("list");
        std::fs::create_dir_all(d.join("checkpoints/sub")).unwrap();
        std::fs::create_dir_all(d.join("vae")).unwrap();
        for f in [
            "a.safetensors",
            "b.pkl",
            "notes.txt",
            "checkpoints/c.pkl",
            "checkpoints/sub/d.safetensors",
            "vae/v.safetensors",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        assert_eq!(
            list_checkpoints(&d),
            [
                "a.safetensors",
                "b.pkl",
                "checkpoints/c.pkl",
                "checkpoints/sub/d.safetensors"
            ]
        );
        assert_eq!(list_vaes(&d), ["a.safetensors", "vae/v.safetensors"]);
        assert!(list_checkpoints(&d.join("missing")).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let d = tmp("resolve");
        std::fs::create_dir_all(d.join("checkpoints")).unwrap();
        std::fs::write(d.join("a.safetensors"), b"x").unwrap();
        std::fs::write(d.join("checkpoints/c.pkl"), b"x").unwrap();
        assert!(resolve_checkpoint(&d, "a.safetensors").is_ok());
        assert!(resolve_checkpoint(&d, "checkpoints/c.pkl").is_ok());
        assert!(
            resolve_checkpoint(&d, "c.pkl").is_ok(),
            "found under checkpoints/"
        );
        let e = resolve_checkpoint(&d, "missing.pkl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not found") && e.contains("missing.pkl"), "{e}");
        let e = resolve_checkpoint(&d, "../a.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".."), "{e}");
        let e = resolve_checkpoint(&d, "checkpoints/../../x")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".."), "{e}");
        let abs = d.join("a.safetensors").display().to_string();
        let e = resolve_checkpoint(&d, &abs).unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
        assert!(resolve_checkpoint(&d, "").is_err());
        #[cfg(unix)]
        {
            // The user's links lead anywhere: a checkpoint kept elsewhere, a shared folder.
            let outside = tmp("outside");
            std::fs::create_dir_all(outside.join("shared")).unwrap();
            std::fs::write(outside.join("big.pkl"), b"x").unwrap();
            std::fs::write(outside.join("shared/s.safetensors"), b"x").unwrap();
            std::os::unix::fs::symlink(outside.join("big.pkl"), d.join("link.pkl")).unwrap();
            std::os::unix::fs::symlink(outside.join("shared"), d.join("checkpoints/shared"))
                .unwrap();
            let real = outside.canonicalize().unwrap();
            assert_eq!(
                resolve_checkpoint(&d, "link.pkl").unwrap(),
                real.join("big.pkl")
            );
            assert_eq!(
                resolve_checkpoint(&d, "shared/s.safetensors").unwrap(),
                real.join("shared/s.safetensors")
            );
            assert!(list_checkpoints(&d).contains(&"checkpoints/shared/s.safetensors".into()));
            std::fs::remove_dir_all(&outside).unwrap();
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn extra_folders_are_listed_and_searched_after_the_models_directory() {
        let d = tmp("extra-main");
        let e1 = tmp("extra-1");
        let e2 = tmp("extra-2");
        std::fs::write(d.join("a.safetensors"), b"main").unwrap();
        std::fs::write(e1.join("a.safetensors"), b"e1").unwrap();
        std::fs::create_dir_all(e1.join("sd")).unwrap();
        std::fs::write(e1.join("sd/b.pkl"), b"e1").unwrap();
        std::fs::write(e2.join("c.safetensors"), b"e2").unwrap();
        let extra = [e1.clone(), e2.clone()];
        assert_eq!(
            list_checkpoints_with(&d, &extra),
            ["a.safetensors", "c.safetensors", "sd/b.pkl"]
        );
        let (root, p) = locate_checkpoint(&d, &extra, "a.safetensors").unwrap();
        assert_eq!(
            (root.as_path(), std::fs::read(p).unwrap()),
            (d.as_path(), b"main".to_vec())
        );
        let (root, _) = locate_checkpoint(&d, &extra, "sd/b.pkl").unwrap();
        assert_eq!(root, e1);
        let (root, p) = locate_checkpoint(&d, &extra, "c.safetensors").unwrap();
        assert_eq!(root, e2);
        assert_eq!(resolve_checkpoint(&root, "c.safetensors").unwrap(), p);
        let e = locate_checkpoint(&d, &extra, "none.pkl")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&*e2.display().to_string()),
            "names every folder: {e}"
        );
        assert!(locate_checkpoint(&d, &extra, "../x").is_err());
        // A missing models directory does not hide the extra folders.
        let (root, _) = locate_checkpoint(&d.join("missing"), &extra, "c.safetensors").unwrap();
        assert_eq!(root, e2);
        for x in [&d, &e1, &e2] {
            std::fs::remove_dir_all(x).unwrap();
        }
    }
}
