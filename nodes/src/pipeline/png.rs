//! Writing images the way ComfyUI's SaveImage / PreviewImage do: PNG files named `{prefix}_{counter:05}_.png`
//! (the counter continues after the highest one already in the folder), optional sub-folders in the prefix (never
//! leaving the output directory), and `tEXt` chunks `prompt` / `workflow` (every `extra_pnginfo` entry) holding JSON.
//!
//! Files are written crash-safe ([`write_atomically`]): under the temporary name `.{name}.tmp-{pid}` in the same
//! folder, flushed to disk, then renamed into place, so a reader (the server's `/view`) never sees half a file; the
//! counter scan ignores temporary names.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use odelt_contract::paths::{self, LinkPolicy, PathError};

use crate::error::{Error, Result};

/// Where a batch of files goes: a folder inside the output directory, the base name and the first free counter.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveTarget {
    /// The folder (created if missing).
    pub folder: PathBuf,
    /// Base file name (the last component of the prefix).
    pub filename: String,
    /// The sub-folder relative to the output directory, `/`-separated ("" for none) — what the UI payload reports.
    pub subfolder: String,
    /// The first counter to use.
    pub counter: u32,
}

impl SaveTarget {
    /// `{filename}_{counter:05}_.{ext}` with `%batch_num%` replaced.
    pub fn file_name(&self, counter: u32, batch_num: usize, ext: &str) -> String {
        let base = self.filename.replace("%batch_num%", &batch_num.to_string());
        format!("{base}_{counter:05}_.{ext}")
    }
}

/// Splits a filename prefix into its sub-folder components and base name (like `os.path.normpath`), refusing
/// absolute prefixes and `..` that would climb above the output directory ([`paths::normalize_relative`]).
/// Touches no files.
pub fn save_target_shape(prefix: &str) -> Result<(Vec<String>, String)> {
    let prefix = prefix.replace('\\', "/");
    if prefix.trim().is_empty() {
        return Err(Error::invalid("filename_prefix is empty"));
    }
    let mut parts = paths::normalize_relative(&prefix).map_err(|e| {
        Error::invalid(match e {
            PathError::Absolute { .. } | PathError::BadPart { .. } => format!(
                "filename_prefix {prefix:?} is an absolute path; saving outside the output folder is not allowed"
            ),
            PathError::Escapes { .. } => format!(
                "filename_prefix {prefix:?} leads outside the output folder; saving there is not allowed"
            ),
            other => format!("filename_prefix {other}"),
        })
    })?;
    let Some(filename) = parts.pop() else {
        return Err(Error::invalid(format!(
            "filename_prefix {prefix:?} names no file"
        )));
    };
    Ok((parts, filename))
}

/// Splits `prefix` into sub-folder and base name, checks it stays inside `output_dir` (symlinks inside it are
/// followed as long as they stay inside; nothing is created outside), creates the folder, and finds the next free
/// counter the way ComfyUI's `get_save_image_path` does: among files in the folder named
/// `{filename}_{digits}_…`, the highest `digits` plus one (1 when there is none). `%width%` and `%height%` in the
/// prefix are replaced by the image size.
pub fn save_target(
    output_dir: &Path,
    prefix: &str,
    width: usize,
    height: usize,
) -> Result<SaveTarget> {
    let prefix = prefix
        .replace("%width%", &width.to_string())
        .replace("%height%", &height.to_string());
    let (parts, filename) = save_target_shape(&prefix)?;
    let subfolder = parts.join("/");
    let folder = parts
        .iter()
        .fold(output_dir.to_path_buf(), |acc, s| acc.join(s));
    paths::create_dir_under(output_dir, &parts, LinkPolicy::FollowInside).map_err(|e| match e {
        PathError::Io { path, source, .. } => Error::Io { path, source },
        PathError::OutsideBase { resolved, .. } => Error::invalid(format!(
            "filename_prefix {prefix:?} resolves to {}, outside the output folder",
            resolved.display()
        )),
        other => Error::invalid(format!("filename_prefix {prefix:?}: {other}")),
    })?;
    let counter = next_counter(&folder, &filename);
    Ok(SaveTarget {
        folder,
        filename,
        subfolder,
        counter,
    })
}

fn next_counter(folder: &Path, filename: &str) -> u32 {
    let mut max = 0u32;
    let want = format!("{filename}_");
    if let Ok(rd) = std::fs::read_dir(folder) {
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if is_temp_name(&name) {
                continue;
            }
            let n = filename.chars().count();
            let head: String = name.chars().take(n + 1).collect();
            if head != want {
                continue;
            }
            let rest: String = name.chars().skip(n + 1).collect();
            let digits = rest.split('_').next().unwrap_or("");
            let v = digits.parse::<u32>().unwrap_or(0);
            max = max.max(v);
        }
    }
    max.saturating_add(1)
}

/// The temporary name a file is written under before it is renamed to `final_path`: `.{name}.tmp-{pid}` in the same
/// folder (the rename then stays within one file system).
pub fn temp_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether `name` is a temporary name made by [`temp_path`] (by any process).
pub fn is_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp-"))
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `path` crash-safe: `write` fills the file at [`temp_path`], which is then flushed to disk and renamed to
/// `path`. On any error the temporary file is removed and `path` is left as it was.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let done = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// JSON text made ASCII-only (`\uXXXX` escapes), as Python's `json.dumps` writes it: tEXt chunks are Latin-1.
pub fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for ch in json.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut buf = [0u16; 2];
            for u in ch.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The text chunks SaveImage writes: `prompt` (the API prompt JSON) and one chunk per `extra_pnginfo` entry
/// (normally `workflow`), each as ASCII JSON. Non-JSON or missing inputs are skipped.
pub fn comfy_text_chunks(
    prompt_json: Option<&str>,
    extra_pnginfo_json: Option<&str>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(p) = prompt_json {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(p) {
            out.push(("prompt".to_string(), ascii_json(&v.to_string())));
        }
    }
    if let Some(e) = extra_pnginfo_json {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(e) {
            for (k, v) in m {
                if !k.is_empty() && k.len() < 80 && k.is_ascii() {
                    out.push((k, ascii_json(&v.to_string())));
                }
            }
        }
    }
    out
}

/// Converts one `[H, W, C]` image in 0..1 to 8-bit (`clip(255·v)` truncated, as ComfyUI does). C = 1, 3 or 4.
pub fn to_u8(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .map(|&v| {
            let x = (v * 255.0).clamp(0.0, 255.0);
            if x.is_nan() {
                0
            } else {
                x as u8
            }
        })
        .collect()
}

/// Writes an 8-bit PNG (`channels` 1 = grey, 3 = RGB, 4 = RGBA) with the given tEXt chunks.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
    texts: &[(String, String)],
) -> Result<()> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        c => {
            return Err(Error::invalid(format!(
                "cannot write an image with {c} channels as PNG (1 to 4)"
            )))
        }
    };
    if pixels.len() != width * height * channels {
        return Err(Error::invalid(format!(
            "{width}x{height}x{channels} image needs {} bytes, got {}",
            width * height * channels,
            pixels.len()
        )));
    }
    let png_err =
        |e: png::EncodingError| Error::invalid(format!("writing PNG {}: {e}", path.display()));
    write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })?;
        let mut enc = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        for (k, v) in texts {
            enc.add_text_chunk(k.clone(), v.clone()).map_err(png_err)?;
        }
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(pixels).map_err(png_err)?;
        w.finish().map_err(png_err)?;
        Ok(())
    })
}

/// One saved file, as the UI payload lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedFile {
    pub filename: String,
    pub subfolder: String,
}

/// Saves every image of a `[B, H, W, C]` batch (values 0..1) under `dir` with `prefix`, ComfyUI-style.
pub fn save_images(
    dir: &Path,
    prefix: &str,
    shape: &[usize],
    values: &[f32],
    texts: &[(String, String)],
) -> Result<Vec<SavedFile>> {
    let [b, h, w, c] = match shape {
        [b, h, w, c] => [*b, *h, *w, *c],
        s => {
            return Err(Error::invalid(format!(
                "IMAGE must be [B, H, W, C], got shape {s:?}"
            )))
        }
    };
    if values.len() != b * h * w * c {
        return Err(Error::invalid(format!(
            "IMAGE of shape {shape:?} holds {} values",
            values.len()
        )));
    }
    let target = save_target(dir, prefix, w, h)?;
    let per = h * w * c;
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let counter = target.counter + i as u32;
        let name = target.file_name(counter, i, "png");
        let px = to_u8(&values[i * per..(i + 1) * per]);
        write_png(&target.folder.join(&name), w, h, c, &px, texts)?;
        out.push(SavedFile {
            filename: name,
            subfolder: target.subfolder.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("odelt-png-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn counter_and_subfolders_follow_comfyui() {
        let d = tmp("counter");
        let t = save_target(&d, "odelt", 8, 8).unwrap();
        assert_eq!(
            (t.counter, t.subfolder.as_str(), t.filename.as_str()),
            (1, "", "odelt")
        );
        std::fs::write(d.join("odelt_00007_.png"), b"").unwrap();
        std::fs::write(d.join("odelt_other_00099_.png"), b"").unwrap();
        std::fs::write(d.join("odeltx_00050_.png"), b"").unwrap();
        std::fs::write(d.join(".odelt_00090_.png.tmp-77"), b"").unwrap();
        std::fs::write(d.join("odelt_00091_.png.tmp-77"), b"").unwrap();
        // A temporary name is no file; a name that only looks like one still counts.
        assert_eq!(save_target(&d, "odelt", 8, 8).unwrap().counter, 92);
        std::fs::remove_file(d.join("odelt_00091_.png.tmp-77")).unwrap();
        assert_eq!(save_target(&d, "odelt", 8, 8).unwrap().counter, 8);
        let t = save_target(&d, "runs/a/img", 8, 8).unwrap();
        assert_eq!(t.subfolder, "runs/a");
        assert!(t.folder.ends_with("runs/a"));
        assert_eq!(t.file_name(3, 0, "png"), "img_00003_.png");
        assert!(save_target(&d, "../x", 8, 8).is_err());
        assert!(save_target(&d, "a/../../x", 8, 8).is_err());
        assert!(save_target(&d, "/tmp/x", 8, 8).is_err());
        assert!(save_target(&d, "a/./b/../c", 8, 8).unwrap().subfolder == "a");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn writes_png_with_text_chunks() {
        let d = tmp("write");
        let texts = comfy_text_chunks(
            Some(r#"{"1":{"class_type":"X","inputs":{"s":"é"}}}"#),
            Some(r#"{"workflow":{"nodes":[]}}"#),
        );
        assert_eq!(texts[0].0, "prompt");
        assert!(texts[0].1.contains("\\u00e9"));
        assert_eq!(
            texts[1],
            ("workflow".to_string(), r#"{"nodes":[]}"#.to_string())
        );
        let vals: Vec<f32> = (0..2 * 2 * 3 * 2).map(|i| i as f32 / 11.0).collect();
        let saved = save_images(&d, "sub/pic", &[2, 2, 3, 2], &vals, &texts).unwrap();
        assert_eq!(saved[0].filename, "pic_00001_.png");
        assert_eq!(saved[1].filename, "pic_00002_.png");
        let f = std::fs::File::open(d.join("sub/pic_00002_.png")).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(f));
        let r = dec.read_info().unwrap();
        let info = r.info();
        assert_eq!((info.width, info.height), (3, 2));
        let chunks: Vec<(&str, &str)> = info
            .uncompressed_latin1_text
            .iter()
            .map(|c| (c.keyword.as_str(), c.text.as_str()))
            .collect();
        assert!(chunks
            .iter()
            .any(|(k, v)| *k == "prompt" && v.contains("class_type")));
        assert!(chunks.iter().any(|(k, _)| *k == "workflow"));
        assert_eq!(to_u8(&[-1.0, 0.5, 2.0, f32::NAN]), vec![0, 127, 255, 0]);
        let left: Vec<String> = std::fs::read_dir(d.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| is_temp_name(n))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_writes_leave_the_old_file_or_the_new_one() {
        let d = tmp("atomic");
        let p = d.join("a_00001_.png");
        assert_eq!(
            temp_path(&p).file_name().unwrap().to_string_lossy(),
            format!(".a_00001_.png.tmp-{}", std::process::id())
        );
        assert!(is_temp_name(
            &temp_path(&p).file_name().unwrap().to_string_lossy()
        ));
        assert!(
            !is_temp_name("a_00001_.png") && !is_temp_name(".a.tmp-") && !is_temp_name(".a.tmp-1x")
        );
        write_png(&p, 1, 1, 3, &[1, 2, 3], &[]).unwrap();
        let first = std::fs::read(&p).unwrap();
        // A failed write keeps the finished file and removes its temporary one.
        let failed = write_atomically(&p, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::invalid("stopped halfway"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), first);
        assert!(!temp_path(&p).exists());
        assert!(
            write_png(&p, 2, 1, 3, &[0; 5], &[]).is_err(),
            "a short buffer is refused"
        );
        assert_eq!(std::fs::read(&p).unwrap(), first);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
