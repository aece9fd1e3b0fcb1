//! Confining file access to the output/input/temp folders: no `..`, no absolute paths, no
//! symbolic links anywhere below the folder ([`odelt_contract::paths`] with
//! [`LinkPolicy::Refuse`]), with the refusals sorted into HTTP statuses ([`PathFault`]).

use std::path::{Path, PathBuf};

use odelt_contract::paths::{self, LinkPolicy, PathError};

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathFault {
    /// Malformed: empty, absolute, `..`, NUL, or a separator in a file name (HTTP 400).
    BadName(String),
    /// It leaves the folder, or goes through a symbolic link (HTTP 403).
    Escape(String),
    /// No such file (HTTP 404).
    NotFound(String),
}

impl std::fmt::Display for PathFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathFault::BadName(m) | PathFault::Escape(m) | PathFault::NotFound(m) => f.write_str(m),
        }
    }
}

impl From<PathError> for PathFault {
    fn from(e: PathError) -> Self {
        let message = e.to_string();
        match e {
            PathError::Symlink { .. } | PathError::OutsideBase { .. } => PathFault::Escape(message),
            PathError::BaseUnavailable { .. }
            | PathError::NotFound { .. }
            | PathError::NotAFile { .. }
            | PathError::NotADir { .. }
            | PathError::Io { .. } => PathFault::NotFound(message),
            PathError::Empty
            | PathError::Nul { .. }
            | PathError::Absolute { .. }
            | PathError::ParentDir { .. }
            | PathError::Escapes { .. }
            | PathError::Separator { .. }
            | PathError::BadPart { .. } => PathFault::BadName(message),
        }
    }
}

/// Checks a file name: non-empty, no separators, not `.`/`..`, no NUL, not absolute
/// ([`paths::check_file_name`]).
pub fn check_file_name(name: &str) -> Result<(), PathFault> {
    Ok(paths::check_file_name(name)?)
}

/// Splits a subfolder into plain components (empty → none), refusing `..`, absolute paths
/// and NUL ([`paths::check_relative`]).
pub fn subfolder_parts(sub: &str) -> Result<Vec<String>, PathFault> {
    Ok(paths::check_relative(sub)?)
}

/// Resolves an existing regular file `base/subfolder/filename`, confined to `base`.
pub fn resolve_existing(
    base: &Path,
    subfolder: &str,
    filename: &str,
) -> Result<PathBuf, PathFault> {
    check_file_name(filename)?;
    let mut parts = subfolder_parts(subfolder)?;
    parts.push(filename.to_string());
    Ok(paths::resolve_file_under(base, &parts, LinkPolicy::Refuse)?)
}

/// Creates (if needed) `base/subfolder` for writing, confined to `base`; returns the folder.
pub fn prepare_dir(base: &Path, subfolder: &str) -> Result<PathBuf, PathFault> {
    let parts = subfolder_parts(subfolder)?;
    Ok(paths::create_dir_under(base, &parts, LinkPolicy::Refuse)?)
}

/// A MIME type from the extension.
pub fn mime_for(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// `name (1).ext`, `name (2).ext`, ... (ComfyUI's upload renaming).
pub fn numbered_name(name: &str, k: u32) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({k}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({k})"),
    }
}

/// Relative paths of the files under `dir` (sorted, `/`-separated, no hidden files, links
/// not followed), at most `limit` of them.
pub fn list_files(dir: &Path, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((d, prefix, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if ft.is_dir() && depth < 16 {
                stack.push((e.path(), rel, depth + 1));
            } else if ft.is_file() && out.len() < limit {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("odelt-serve-files-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn refusals_map_to_http_classes() {
        // What is refused is tested with odelt_contract::paths; here: which status each gets.
        let base = tmp("resolve");
        std::fs::create_dir_all(base.join("sub")).unwrap();
        std::fs::write(base.join("sub/ok.png"), "x").unwrap();
        assert!(resolve_existing(&base, "sub", "ok.png").is_ok());
        for (sub, name) in [
            ("", "../a"),
            ("", "a/b"),
            ("..", "a"),
            ("/abs", "a"),
            ("", ""),
        ] {
            assert!(
                matches!(
                    resolve_existing(&base, sub, name),
                    Err(PathFault::BadName(_))
                ),
                "{sub:?} {name:?}"
            );
        }
        assert!(matches!(
            resolve_existing(&base, "", "missing.png"),
            Err(PathFault::NotFound(_))
        ));
        assert!(matches!(
            resolve_existing(&base, "", "sub"),
            Err(PathFault::NotFound(_))
        ));
        #[cfg(unix)]
        {
            let outside = tmp("outside");
            std::fs::write(outside.join("secret.txt"), "s").unwrap();
            std::os::unix::fs::symlink(outside.join("secret.txt"), base.join("link.txt")).unwrap();
            std::os::unix::fs::symlink(&outside, base.join("linkdir")).unwrap();
            assert!(matches!(
                resolve_existing(&base, "", "link.txt"),
                Err(PathFault::Escape(_))
            ));
            assert!(matches!(
                resolve_existing(&base, "linkdir", "secret.txt"),
                Err(PathFault::Escape(_))
            ));
            assert!(matches!(
                prepare_dir(&base, "linkdir"),
                Err(PathFault::Escape(_))
            ));
        }
        assert!(prepare_dir(&base, "new/deeper")
            .unwrap()
            .ends_with("new/deeper"));
        assert_eq!(numbered_name("a.png", 2), "a (2).png");
        assert_eq!(numbered_name("noext", 1), "noext (1)");
        assert_eq!(list_files(&base, 100), ["sub/ok.png"]);
    }
}
