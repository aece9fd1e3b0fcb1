//! Confining file access to the output/input/temp folders: no `..`, no absolute paths, no
//! symbolic links anywhere below the folder.

use std::path::{Component, Path, PathBuf};

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

/// Checks a file name: non-empty, no separators, not `.`/`..`, no NUL, not absolute.
pub fn check_file_name(name: &str) -> Result<(), PathFault> {
    if name.is_empty() {
        return Err(PathFault::BadName("empty file name".into()));
    }
    if name.starts_with('/') || name.starts_with('\\') || Path::new(name).is_absolute() {
        return Err(PathFault::BadName(format!(
            "absolute file name '{name}' not allowed"
        )));
    }
    if name.contains("..") {
        return Err(PathFault::BadName(format!(
            "'..' not allowed in file name '{name}'"
        )));
    }
    if name.contains(['/', '\\', '\0']) || name == "." {
        return Err(PathFault::BadName(format!(
            "file name '{name}' must not contain path separators"
        )));
    }
    Ok(())
}

/// Splits a subfolder into plain components (empty → none), refusing `..`, absolute paths
/// and NUL.
pub fn subfolder_parts(sub: &str) -> Result<Vec<String>, PathFault> {
    if sub.starts_with('/') || sub.starts_with('\\') || Path::new(sub).is_absolute() {
        return Err(PathFault::BadName(format!(
            "absolute subfolder '{sub}' not allowed"
        )));
    }
    if sub.contains('\0') {
        return Err(PathFault::BadName("NUL in subfolder".into()));
    }
    let mut parts = Vec::new();
    for p in sub.split(['/', '\\']) {
        match p {
            "" | "." => {}
            ".." => {
                return Err(PathFault::BadName(format!(
                    "'..' not allowed in subfolder '{sub}'"
                )))
            }
            p => {
                if !matches!(Path::new(p).components().next(), Some(Component::Normal(_))) {
                    return Err(PathFault::BadName(format!("bad subfolder part '{p}'")));
                }
                parts.push(p.to_string());
            }
        }
    }
    Ok(parts)
}

/// Refuses any symbolic link on the way from `base` down through `parts`; returns the path.
fn walk_no_links(base: &Path, parts: &[String], must_exist: bool) -> Result<PathBuf, PathFault> {
    let mut p = base.to_path_buf();
    for part in parts {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(PathFault::Escape(format!(
                    "'{}' is a symbolic link",
                    p.strip_prefix(base).unwrap_or(&p).display()
                )))
            }
            Ok(_) => {}
            Err(_) if !must_exist => {}
            Err(_) => {
                return Err(PathFault::NotFound(format!(
                    "'{}' not found",
                    p.strip_prefix(base).unwrap_or(&p).display()
                )))
            }
        }
    }
    Ok(p)
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
    let base_c = base
        .canonicalize()
        .map_err(|_| PathFault::NotFound(format!("'{filename}' not found")))?;
    let p = walk_no_links(&base_c, &parts, true)?;
    let real = p
        .canonicalize()
        .map_err(|_| PathFault::NotFound(format!("'{filename}' not found")))?;
    if !real.starts_with(&base_c) {
        return Err(PathFault::Escape(format!(
            "'{filename}' is outside the folder"
        )));
    }
    if !real.is_file() {
        return Err(PathFault::NotFound(format!("'{filename}' is not a file")));
    }
    Ok(real)
}

/// Creates (if needed) `base/subfolder` for writing, confined to `base`; returns the folder.
pub fn prepare_dir(base: &Path, subfolder: &str) -> Result<PathBuf, PathFault> {
    let parts = subfolder_parts(subfolder)?;
    std::fs::create_dir_all(base)
        .map_err(|e| PathFault::NotFound(format!("cannot create folder: {e}")))?;
    let base_c = base
        .canonicalize()
        .map_err(|e| PathFault::NotFound(format!("folder unavailable: {e}")))?;
    let dir = walk_no_links(&base_c, &parts, false)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| PathFault::NotFound(format!("cannot create subfolder: {e}")))?;
    // Re-check after creation (a link could have appeared in between).
    let real = walk_no_links(&base_c, &parts, true)?
        .canonicalize()
        .map_err(|e| PathFault::NotFound(format!("subfolder unavailable: {e}")))?;
    if !real.starts_with(&base_c) {
        return Err(PathFault::Escape("subfolder is outside the folder".into()));
    }
    Ok(real)
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
    fn names_and_subfolders_are_checked() {
        assert!(check_file_name("a.png").is_ok());
        for bad in [
            "",
            "../a",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "..",
            "x..y",
            "a\0b",
        ] {
            assert!(
                matches!(check_file_name(bad), Err(PathFault::BadName(_))),
                "{bad:?}"
            );
        }
        assert_eq!(subfolder_parts("a/b/").unwrap(), ["a", "b"]);
        assert!(subfolder_parts("").unwrap().is_empty());
        assert!(subfolder_parts("a/../b").is_err());
        assert!(subfolder_parts("/abs").is_err());
    }

    #[test]
    fn resolution_stays_inside_and_refuses_links() {
        let base = tmp("resolve");
        let outside = tmp("outside");
        std::fs::write(outside.join("secret.txt"), "s").unwrap();
        std::fs::create_dir_all(base.join("sub")).unwrap();
        std::fs::write(base.join("sub/ok.png"), "x").unwrap();
        assert!(resolve_existing(&base, "sub", "ok.png").is_ok());
        assert!(matches!(
            resolve_existing(&base, "", "missing.png"),
            Err(PathFault::NotFound(_))
        ));
        #[cfg(unix)]
        {
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
