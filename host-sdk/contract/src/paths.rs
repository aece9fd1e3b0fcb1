//! Confining user-given names to a base folder: the one implementation the host's file server, the models
//! directory and image saving share.
//!
//! A *relative name* is a `/`- or `\`-separated path (`sub/pic.png`, `checkpoints\imagenet.pkl`). Checking one
//! ([`check_relative`], [`normalize_relative`], [`check_file_name`]) touches no files and refuses NUL bytes and
//! absolute names (a leading `/` or `\`, a drive prefix such as `C:`, anything [`Path::is_absolute`] calls
//! absolute); the checks differ only in what they make of `..` and of separators. Empty components and `.` are
//! dropped.
//!
//! Resolving the components under a base ([`resolve_under`], [`resolve_file_under`], [`create_dir_under`])
//! canonicalizes the base and the result and refuses a result outside the canonical base (unless the
//! [`LinkPolicy`] lets links lead anywhere). The [`LinkPolicy`] says what a symbolic link below the base may do;
//! folders are only ever created inside the base, whatever the policy.
//!
//! Confinement by role: a host's input, output and temp folders hold what arrives over the network and what nodes
//! write, so names there resolve with [`LinkPolicy::Refuse`] or [`LinkPolicy::FollowInside`]; the models folder is
//! curated by the user (nothing writes there), whose links — a checkpoint kept once on disk and linked from several
//! tools — are followed ([`LinkPolicy::Follow`]). Names themselves never leave a base in any policy.
//!
//! [`split_annotation`] reads ComfyUI's annotated names (`name.latent [output]`), which say which of the host's
//! folders a name belongs to.
//!
//! Error messages ([`PathError`]) name the path as the user gave it and what was wrong; they never show absolute
//! paths on the machine (the variants that know them carry them as fields), so they are safe to send to an HTTP
//! client.

use std::io;
use std::path::{Component, Path, PathBuf};

/// What a symbolic link below the base may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPolicy {
    /// No component below the base may be a symbolic link, wherever it points (the HTTP file server).
    Refuse,
    /// Links are followed as long as the canonical result stays inside the canonical base.
    FollowInside,
    /// Links below the base are followed wherever they lead (a folder the user curates, such as the models
    /// directory). The name itself still cannot leave the base (no `..`, not absolute). [`create_dir_under`] treats
    /// it as [`LinkPolicy::FollowInside`]: nothing is ever created outside the base.
    Follow,
}

/// One of a host's folders, as ComfyUI's annotated names (`name [output]`) and `/view?type=` call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// User inputs (uploads, files to load).
    Input,
    /// Final outputs.
    Output,
    /// Temporary/preview outputs.
    Temp,
}

impl Folder {
    /// `input`, `output` or `temp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Input => "input",
            Folder::Output => "output",
            Folder::Temp => "temp",
        }
    }
}

/// Splits ComfyUI's folder annotation off a name, as `folder_paths.annotated_filepath` does: a name ending in
/// `[output]`, `[input]` or `[temp]` belongs to that folder, and the annotation and one character before it (the
/// space of `name [output]`) are removed. A name without an annotation is returned whole, with `None`.
pub fn split_annotation(name: &str) -> (&str, Option<Folder>) {
    for (tag, folder) in [
        ("[output]", Folder::Output),
        ("[input]", Folder::Input),
        ("[temp]", Folder::Temp),
    ] {
        if let Some(rest) = name.strip_suffix(tag) {
            // ComfyUI cuts one more character (the separating space); a bare `[output]` leaves an empty name.
            let cut = rest.char_indices().last().map_or(0, |(i, _)| i);
            return (&rest[..cut], Some(folder));
        }
    }
    (name, None)
}

/// Why a name was refused or could not be resolved. `name` is always the name as the user gave it (or its
/// components joined with `/`).
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// An empty file name.
    #[error("empty file name")]
    Empty,
    /// The name holds a NUL byte.
    #[error("{name:?} contains a NUL byte")]
    Nul {
        /// The name as given.
        name: String,
    },
    /// An absolute name (leading separator, drive prefix, root).
    #[error("{name:?} is an absolute path; only names relative to the folder are allowed")]
    Absolute {
        /// The name as given.
        name: String,
    },
    /// The name contains `..` (where `..` is refused outright).
    #[error("{name:?} contains `..`; names must stay inside the folder")]
    ParentDir {
        /// The name as given.
        name: String,
    },
    /// The name's `..` components climb above the base (where `..` is folded away).
    #[error("{name:?} leads outside the folder")]
    Escapes {
        /// The name as given.
        name: String,
    },
    /// A separator in what must be a single file name.
    #[error("file name {name:?} must not contain path separators")]
    Separator {
        /// The name as given.
        name: String,
    },
    /// A component that is no plain name (`.` as a file name, a Windows drive in the middle of a path).
    #[error("{name:?} has a component {part:?} that is not a plain name")]
    BadPart {
        /// The name as given.
        name: String,
        /// The offending component.
        part: String,
    },
    /// The base folder does not exist or cannot be read.
    #[error("the folder for {name:?} is not available ({source})")]
    BaseUnavailable {
        /// The name as given.
        name: String,
        /// The base folder.
        base: PathBuf,
        /// Why it could not be canonicalized.
        source: io::Error,
    },
    /// Nothing exists under that name.
    #[error("{name:?} not found")]
    NotFound {
        /// The name as given.
        name: String,
    },
    /// It exists but is not a regular file.
    #[error("{name:?} is not a file")]
    NotAFile {
        /// The name as given.
        name: String,
    },
    /// It exists but is not a folder.
    #[error("{name:?} is not a folder")]
    NotADir {
        /// The components up to the one that is not a folder.
        name: String,
    },
    /// A component is a symbolic link, under [`LinkPolicy::Refuse`].
    #[error("{link:?} is a symbolic link")]
    Symlink {
        /// The name as given.
        name: String,
        /// The components up to the link, relative to the base.
        link: String,
    },
    /// The canonical result is not inside the canonical base.
    #[error("{name:?} resolves to a place outside the folder")]
    OutsideBase {
        /// The name as given.
        name: String,
        /// Where it leads (canonical).
        resolved: PathBuf,
        /// The canonical base.
        base: PathBuf,
    },
    /// Creating a folder (the base or a component of the name) failed.
    #[error("cannot create the folder for {name:?}: {source}")]
    Io {
        /// The name as given.
        name: String,
        /// The folder that could not be created.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn looks_absolute(name: &str) -> bool {
    let b = name.as_bytes();
    name.starts_with(['/', '\\'])
        || Path::new(name).is_absolute()
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// Checks one component that already contains no separator: a plain name, not `.` or `..`.
fn check_part(name: &str, part: &str) -> Result<(), PathError> {
    if part == ".." {
        return Err(PathError::ParentDir { name: name.into() });
    }
    let mut comps = Path::new(part).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => Err(PathError::BadPart {
            name: name.into(),
            part: part.into(),
        }),
    }
}

/// The shared first checks: no NUL, not absolute.
fn check_common(name: &str) -> Result<(), PathError> {
    if name.contains('\0') {
        return Err(PathError::Nul { name: name.into() });
    }
    if looks_absolute(name) {
        return Err(PathError::Absolute { name: name.into() });
    }
    Ok(())
}

/// Splits a relative name into its components, refusing NUL, absolute names and any `..` component. Empty
/// components and `.` are dropped, so `""` and `"."` give no components (the base itself).
pub fn check_relative(name: &str) -> Result<Vec<String>, PathError> {
    check_common(name)?;
    let mut parts = Vec::new();
    for part in name.split(['/', '\\']) {
        if part.is_empty() || part == "." {
            continue;
        }
        check_part(name, part)?;
        parts.push(part.to_string());
    }
    Ok(parts)
}

/// Like [`check_relative`], but folds `..` into the component before it (as `os.path.normpath` does); a `..`
/// that would climb above the base is refused ([`PathError::Escapes`]).
pub fn normalize_relative(name: &str) -> Result<Vec<String>, PathError> {
    check_common(name)?;
    let mut parts: Vec<String> = Vec::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escapes { name: name.into() });
                }
            }
            p => {
                check_part(name, p)?;
                parts.push(p.to_string());
            }
        }
    }
    Ok(parts)
}

/// Checks a single file name: not empty, not absolute, no separator, not `.`, no NUL, and no `..` anywhere in it
/// (`x..y` too: a conservative rule for names that arrive over HTTP).
pub fn check_file_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::Empty);
    }
    check_common(name)?;
    if name.contains("..") {
        return Err(PathError::ParentDir { name: name.into() });
    }
    if name.contains(['/', '\\']) {
        return Err(PathError::Separator { name: name.into() });
    }
    check_part(name, name)
}

fn joined<S: AsRef<str>>(parts: &[S]) -> String {
    let v: Vec<&str> = parts.iter().map(AsRef::as_ref).collect();
    v.join("/")
}

fn canonical_base(base: &Path, name: &str) -> Result<PathBuf, PathError> {
    base.canonicalize()
        .map_err(|source| PathError::BaseUnavailable {
            name: name.into(),
            base: base.to_path_buf(),
            source,
        })
}

/// Resolves the components `parts` (each a plain name, as [`check_relative`] returns them) to an existing entry
/// under `base`: its canonical path, which is inside the canonical base (under [`LinkPolicy::Follow`], wherever
/// the links below the base lead). Under [`LinkPolicy::Refuse`] no component may be a symbolic link.
pub fn resolve_under<S: AsRef<str>>(
    base: &Path,
    parts: &[S],
    links: LinkPolicy,
) -> Result<PathBuf, PathError> {
    let name = joined(parts);
    for p in parts {
        check_part(&name, p.as_ref())?;
    }
    let base_c = canonical_base(base, &name)?;
    let mut p = base_c.clone();
    for (i, part) in parts.iter().enumerate() {
        p.push(part.as_ref());
        if links == LinkPolicy::Refuse {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(PathError::Symlink {
                        name,
                        link: joined(&parts[..=i]),
                    })
                }
                Ok(_) => {}
                Err(_) => return Err(PathError::NotFound { name }),
            }
        }
    }
    let real = p
        .canonicalize()
        .map_err(|_| PathError::NotFound { name: name.clone() })?;
    if links != LinkPolicy::Follow && !real.starts_with(&base_c) {
        return Err(PathError::OutsideBase {
            name,
            resolved: real,
            base: base_c,
        });
    }
    Ok(real)
}

/// [`resolve_under`], and the result must be a regular file.
pub fn resolve_file_under<S: AsRef<str>>(
    base: &Path,
    parts: &[S],
    links: LinkPolicy,
) -> Result<PathBuf, PathError> {
    let real = resolve_under(base, parts, links)?;
    if !real.is_file() {
        return Err(PathError::NotAFile {
            name: joined(parts),
        });
    }
    Ok(real)
}

/// Creates the folder `base/parts...` (the base too, when missing) and returns its canonical path. Each component
/// is checked before anything is created below it — an existing one must be a folder inside the base (under
/// [`LinkPolicy::Refuse`], and not a link) — so nothing is ever created outside the base; the result is checked
/// again with [`resolve_under`] (a link could have appeared in between).
pub fn create_dir_under<S: AsRef<str>>(
    base: &Path,
    parts: &[S],
    links: LinkPolicy,
) -> Result<PathBuf, PathError> {
    let links = match links {
        LinkPolicy::Follow => LinkPolicy::FollowInside,
        other => other,
    };
    let name = joined(parts);
    for p in parts {
        check_part(&name, p.as_ref())?;
    }
    std::fs::create_dir_all(base).map_err(|source| PathError::Io {
        name: name.clone(),
        path: base.to_path_buf(),
        source,
    })?;
    let base_c = canonical_base(base, &name)?;
    let mut p = base_c.clone();
    for (i, part) in parts.iter().enumerate() {
        p.push(part.as_ref());
        let so_far = || joined(&parts[..=i]);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() && links == LinkPolicy::Refuse => {
                return Err(PathError::Symlink {
                    name,
                    link: so_far(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Err(source) = std::fs::create_dir(&p) {
                    // Someone else may have created it meanwhile; it is checked just below.
                    if source.kind() != io::ErrorKind::AlreadyExists {
                        return Err(PathError::Io {
                            name: so_far(),
                            path: p,
                            source,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(PathError::Io {
                    name: so_far(),
                    path: p,
                    source,
                })
            }
        }
        // What exists now (followed, if it is an allowed link) must be a folder inside the base.
        let real = p
            .canonicalize()
            .map_err(|_| PathError::NotFound { name: so_far() })?;
        if !real.starts_with(&base_c) {
            return Err(PathError::OutsideBase {
                name,
                resolved: real,
                base: base_c,
            });
        }
        if !real.is_dir() {
            return Err(PathError::NotADir { name: so_far() });
        }
    }
    resolve_under(base, parts, links)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("odelt-paths-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn relative_names_are_split_and_checked() {
        assert_eq!(check_relative("a/b/").unwrap(), ["a", "b"]);
        assert_eq!(check_relative("a\\b//./c").unwrap(), ["a", "b", "c"]);
        assert!(check_relative("").unwrap().is_empty());
        assert!(check_relative(".").unwrap().is_empty());
        assert_eq!(check_relative("x..y").unwrap(), ["x..y"]);
        for (bad, what) in [
            ("a/../b", "`..`"),
            ("..", "`..`"),
            ("a\\..\\b", "`..`"),
            ("/abs", "absolute"),
            ("\\abs", "absolute"),
            ("C:/x", "absolute"),
            ("c:x", "absolute"),
            ("a\0b", "NUL"),
        ] {
            let e = check_relative(bad).unwrap_err().to_string();
            assert!(e.contains(what), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "names the path: {e}");
        }
    }

    #[test]
    fn normalizing_folds_dot_dot_but_never_climbs_out() {
        assert_eq!(normalize_relative("a/./b/../c").unwrap(), ["a", "c"]);
        assert_eq!(normalize_relative("a\\b\\..").unwrap(), ["a"]);
        assert!(normalize_relative("").unwrap().is_empty());
        for bad in ["../x", "a/../../x", ".."] {
            assert!(
                matches!(normalize_relative(bad), Err(PathError::Escapes { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            normalize_relative("/tmp/x"),
            Err(PathError::Absolute { .. })
        ));
    }

    #[test]
    fn file_names_are_single_plain_components() {
        assert!(check_file_name("a.png").is_ok());
        for bad in [
            "",
            "../a",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "..",
            ".",
            "x..y",
            "a\0b",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            check_file_name("a/b"),
            Err(PathError::Separator { .. })
        ));
    }

    #[test]
    fn resolution_stays_inside_the_base() {
        let base = tmp("resolve");
        std::fs::create_dir_all(base.join("sub")).unwrap();
        std::fs::write(base.join("sub/ok.png"), "x").unwrap();
        for links in [LinkPolicy::Refuse, LinkPolicy::FollowInside] {
            let p = resolve_file_under(&base, &["sub", "ok.png"], links).unwrap();
            assert!(p.ends_with("sub/ok.png") && p.is_absolute());
            let e = resolve_file_under(&base, &["missing.png"], links).unwrap_err();
            assert!(matches!(e, PathError::NotFound { .. }), "{e}");
            assert!(e.to_string().contains("missing.png"), "{e}");
            let e = resolve_file_under(&base, &["sub"], links).unwrap_err();
            assert!(matches!(e, PathError::NotAFile { .. }), "{e}");
            // Unchecked components are refused too.
            let e = resolve_under(&base, &["..", "x"], links).unwrap_err();
            assert!(matches!(e, PathError::ParentDir { .. }), "{e}");
            let e = resolve_under(&base, &["a/b"], links).unwrap_err();
            assert!(matches!(e, PathError::BadPart { .. }), "{e}");
        }
        let e = resolve_under(&base.join("no-such-base"), &["x"], LinkPolicy::Refuse).unwrap_err();
        assert!(matches!(e, PathError::BaseUnavailable { .. }), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn links_out_of_the_base_are_refused_links_inside_follow_the_policy() {
        use std::os::unix::fs::symlink;
        let base = tmp("links");
        let outside = tmp("links-outside");
        std::fs::write(outside.join("secret.txt"), "s").unwrap();
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::fs::write(base.join("real/f.txt"), "f").unwrap();
        symlink(outside.join("secret.txt"), base.join("link.txt")).unwrap();
        symlink(&outside, base.join("linkdir")).unwrap();
        symlink(base.join("real"), base.join("inside")).unwrap();
        for links in [LinkPolicy::Refuse, LinkPolicy::FollowInside] {
            let e = resolve_file_under(&base, &["link.txt"], links).unwrap_err();
            assert!(
                matches!(e, PathError::Symlink { .. } | PathError::OutsideBase { .. }),
                "{e}"
            );
            let e = resolve_file_under(&base, &["linkdir", "secret.txt"], links).unwrap_err();
            assert!(
                matches!(e, PathError::Symlink { .. } | PathError::OutsideBase { .. }),
                "{e}"
            );
            let e = create_dir_under(&base, &["linkdir", "new"], links).unwrap_err();
            assert!(
                matches!(e, PathError::Symlink { .. } | PathError::OutsideBase { .. }),
                "{e}"
            );
            assert!(!outside.join("new").exists(), "nothing created outside");
            // Messages never show where the machine's files are.
            assert!(!e.to_string().contains(&*outside.to_string_lossy()), "{e}");
        }
        // A link that stays inside: refused or followed, as the policy says.
        let e = resolve_file_under(&base, &["inside", "f.txt"], LinkPolicy::Refuse).unwrap_err();
        assert!(
            matches!(&e, PathError::Symlink { link, .. } if link == "inside"),
            "{e}"
        );
        let p = resolve_file_under(&base, &["inside", "f.txt"], LinkPolicy::FollowInside).unwrap();
        assert_eq!(p, base.canonicalize().unwrap().join("real/f.txt"));
        assert!(create_dir_under(&base, &["inside", "d"], LinkPolicy::Refuse).is_err());
        let d = create_dir_under(&base, &["inside", "d"], LinkPolicy::FollowInside).unwrap();
        assert!(d.ends_with("real/d") && d.is_dir());
        match resolve_file_under(&base, &["link.txt"], LinkPolicy::FollowInside) {
            Err(PathError::OutsideBase {
                resolved, base: b, ..
            }) => {
                assert_eq!(resolved, outside.canonicalize().unwrap().join("secret.txt"));
                assert_eq!(b, base.canonicalize().unwrap());
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn annotations_name_the_folder() {
        assert_eq!(
            split_annotation("a.latent [output]"),
            ("a.latent", Some(Folder::Output))
        );
        assert_eq!(
            split_annotation("sub/a.latent [input]"),
            ("sub/a.latent", Some(Folder::Input))
        );
        assert_eq!(split_annotation("x [temp]"), ("x", Some(Folder::Temp)));
        assert_eq!(split_annotation("[output]"), ("", Some(Folder::Output)));
        assert_eq!(split_annotation("a.latent"), ("a.latent", None));
        assert_eq!(
            split_annotation("a[output].latent"),
            ("a[output].latent", None)
        );
        // What remains is checked like any other name.
        let (rest, _) = split_annotation("/etc/passwd [output]");
        assert!(check_relative(rest).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn follow_lets_links_lead_anywhere_but_names_stay_inside() {
        use std::os::unix::fs::symlink;
        let base = tmp("follow");
        let outside = tmp("follow-outside");
        std::fs::write(outside.join("big.ckpt"), "w").unwrap();
        symlink(outside.join("big.ckpt"), base.join("linked.ckpt")).unwrap();
        symlink(&outside, base.join("shared")).unwrap();
        let p = resolve_file_under(&base, &["linked.ckpt"], LinkPolicy::Follow).unwrap();
        assert_eq!(p, outside.canonicalize().unwrap().join("big.ckpt"));
        assert!(resolve_file_under(&base, &["shared", "big.ckpt"], LinkPolicy::Follow).is_ok());
        assert!(matches!(
            resolve_under(&base, &["..", "x"], LinkPolicy::Follow),
            Err(PathError::ParentDir { .. })
        ));
        // Writing never follows a link out.
        let e = create_dir_under(&base, &["shared", "new"], LinkPolicy::Follow).unwrap_err();
        assert!(matches!(e, PathError::OutsideBase { .. }), "{e}");
        assert!(!outside.join("new").exists());
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn folders_are_created_inside_the_base() {
        let base = tmp("create").join("not-yet");
        let d = create_dir_under(&base, &["new", "deeper"], LinkPolicy::Refuse).unwrap();
        assert!(d.ends_with("not-yet/new/deeper") && d.is_dir());
        let none: &[&str] = &[];
        assert_eq!(
            create_dir_under(&base, none, LinkPolicy::FollowInside).unwrap(),
            base.canonicalize().unwrap()
        );
        std::fs::write(base.join("file"), "x").unwrap();
        let e = create_dir_under(&base, &["file", "x"], LinkPolicy::Refuse).unwrap_err();
        assert!(matches!(e, PathError::NotADir { .. }), "{e}");
        std::fs::remove_dir_all(base.parent().unwrap()).unwrap();
    }
}
