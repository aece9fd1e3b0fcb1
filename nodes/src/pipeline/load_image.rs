//! LoadImage: the image files of the host's input directory (where `/upload/image` puts uploads), decoded with the
//! `image` crate into ComfyUI's IMAGE and MASK.
//!
//! - Formats: PNG, JPEG and WebP (the `image` crate's other decoders are not built). The format is recognised from
//!   the file's first bytes, never from its name, so a text file called `x.png` is refused as "not an image".
//! - IMAGE `[1, H, W, 3]` f32 in 0..1 (grey and palette images become RGB, 16-bit PNGs keep their precision);
//!   MASK `[1, H, W]` = 1 − alpha, as ComfyUI's LoadImage (1 = transparent = "to be painted"). An image without
//!   alpha gives a zero mask of the image's size (ComfyUI gives a 64×64 zero mask; the image's size is what
//!   SetLatentNoiseMask needs).
//! - EXIF orientation (JPEG, WebP and PNG `eXIf`) is applied, as ComfyUI's `ImageOps.exif_transpose`.
//! - Animated files (APNG, animated WebP) give their first frame (the decoders' still image).
//! - Decompression bombs: the header's width × height is checked against [`MAX_PIXELS`] before any pixel is
//!   decoded (and the `image` crate's allocation limit stays on), with an error naming both numbers.
//! - Names are relative to the input directory, `/`-separated; `..`, absolute names and links leading outside
//!   are refused ([`odelt_contract::paths`]). ComfyUI's annotations (`pic.png [output]`) pick the output or temp
//!   directory instead.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use odelt_contract::paths::{
    check_relative, resolve_file_under, split_annotation, Folder, LinkPolicy,
};

use super::array::Array;
use crate::error::{Error, Result};

/// The largest image LoadImage decodes, in pixels (40 megapixels: a 7300 × 5470 photo; the IMAGE alone is then
/// 480 MB of f32).
pub const MAX_PIXELS: u64 = 40_000_000;

/// File extensions LoadImage lists (the contents decide the format when the file is read).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// How deep LoadImage looks into sub-folders of the input directory (uploads with a `subfolder`).
const MAX_LIST_DEPTH: usize = 3;

/// The image files under `input_dir` (relative, `/`-separated, sorted; hidden files and folders and links to
/// folders skipped). A missing directory lists nothing.
pub fn list_images(input_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(input_dir, "", MAX_LIST_DEPTH, &mut out);
    out.sort();
    out
}

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        let rel = format!("{prefix}{name}");
        if ft.is_dir() {
            if depth > 1 {
                walk(&e.path(), &format!("{rel}/"), depth - 1, out);
            }
        } else if has_image_extension(&name) && e.path().is_file() {
            out.push(rel);
        }
    }
}

fn has_image_extension(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| IMAGE_EXTENSIONS.iter().any(|e| x.eq_ignore_ascii_case(e)))
}

/// The host directories a LoadImage name can refer to.
#[derive(Debug, Clone, Copy)]
pub struct ImageDirs<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub temp: &'a Path,
}

/// Resolves `name` (relative to the input directory, or annotated `[output]`/`[temp]`) to an existing file inside
/// that directory.
pub fn resolve_image(dirs: &ImageDirs<'_>, name: &str) -> Result<PathBuf> {
    let (bare, folder) = split_annotation(name);
    let base = match folder {
        None | Some(Folder::Input) => dirs.input,
        Some(Folder::Output) => dirs.output,
        Some(Folder::Temp) => dirs.temp,
    };
    let where_ = folder.unwrap_or(Folder::Input).as_str();
    let bad = |e: odelt_contract::paths::PathError| {
        Error::invalid(format!("image {name:?} ({where_} directory): {e}"))
    };
    let parts = check_relative(bare).map_err(bad)?;
    if parts.is_empty() {
        return Err(Error::invalid("no image chosen (the name is empty)"));
    }
    resolve_file_under(base, &parts, LinkPolicy::FollowInside).map_err(bad)
}

/// A decoded image: IMAGE `[1, H, W, 3]` in 0..1 and MASK `[1, H, W]` (1 − alpha; zeros without alpha).
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub image: Array,
    pub mask: Array,
    /// Whether the file has an alpha channel.
    pub has_alpha: bool,
    /// `"PNG"`, `"JPEG"` or `"WebP"`.
    pub format: &'static str,
}

fn format_name(f: ImageFormat) -> Option<&'static str> {
    match f {
        ImageFormat::Png => Some("PNG"),
        ImageFormat::Jpeg => Some("JPEG"),
        ImageFormat::WebP => Some("WebP"),
        _ => None,
    }
}

/// A decoder ready to read the pixels, the format's name and the size `(width, height)`.
type Opened = (Box<dyn ImageDecoder>, &'static str, (u32, u32));

/// Opens `path` and checks its signature and header: a decoder ready to read the pixels, its format and size.
fn open_decoder(path: &Path, name: &str, max_pixels: u64) -> Result<Opened> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: PathBuf::from(name),
        source,
    })?;
    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|source| Error::Io {
            path: PathBuf::from(name),
            source,
        })?;
    let format = match reader.format() {
        None => {
            return Err(Error::invalid(format!(
                "{name:?} is not a PNG, JPEG or WebP image (its contents start with none of their signatures)"
            )))
        }
        Some(f) => format_name(f).ok_or_else(|| {
            Error::invalid(format!(
                "{name:?} is a {f:?} image; LoadImage reads PNG, JPEG and WebP"
            ))
        })?,
    };
    let dec = reader
        .into_decoder()
        .map_err(|e| Error::invalid(format!("{name:?} is not a readable {format} image: {e}")))?;
    let (w, h) = dec.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(Error::invalid(format!(
            "{name:?} is {w}x{h} = {pixels} pixels, more than LoadImage's limit of {max_pixels} pixels \
             (a decompression bomb, or a picture to shrink first)"
        )));
    }
    if pixels == 0 {
        return Err(Error::invalid(format!(
            "{name:?} is an empty {w}x{h} image"
        )));
    }
    Ok((Box::new(dec), format, (w, h)))
}

/// Reads only the header of the image at `path`: its format and (unrotated) width and height, checked against
/// `max_pixels`. What validation checks before anything runs.
pub fn probe_image(path: &Path, name: &str, max_pixels: u64) -> Result<(&'static str, u32, u32)> {
    let (_, format, (w, h)) = open_decoder(path, name, max_pixels)?;
    Ok((format, w, h))
}

/// Decodes the image at `path` (`name` is how messages call it).
pub fn load_image_file(path: &Path, name: &str, max_pixels: u64) -> Result<LoadedImage> {
    let (mut dec, format, _) = open_decoder(path, name, max_pixels)?;
    let orientation = dec.orientation().ok();
    let mut img = DynamicImage::from_decoder(dec).map_err(|e| {
        Error::invalid(format!(
            "{name:?}: the {format} data is damaged or cut short: {e}"
        ))
    })?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(to_image_and_mask(&img, format))
}

/// RGBA values in 0..1: `v / 255` for 8-bit images, `v / 65535` for 16-bit ones (exactly as ComfyUI divides),
/// float images clamped.
fn rgba01(img: &DynamicImage) -> (usize, usize, Vec<f32>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let bytes_per_channel = img.color().bytes_per_pixel() / img.color().channel_count();
    let v = match bytes_per_channel {
        1 => img
            .to_rgba8()
            .into_raw()
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect(),
        2 => img
            .to_rgba16()
            .into_raw()
            .iter()
            .map(|&v| v as f32 / 65535.0)
            .collect(),
        _ => img
            .to_rgba32f()
            .into_raw()
            .iter()
            .map(|v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) })
            .collect(),
    };
    (w, h, v)
}

fn to_image_and_mask(img: &DynamicImage, format: &'static str) -> LoadedImage {
    let has_alpha = img.color().has_alpha();
    let (w, h, rgba) = rgba01(img);
    let mut pix = Vec::with_capacity(w * h * 3);
    let mut mask = Vec::with_capacity(w * h);
    for p in rgba.chunks_exact(4) {
        pix.extend_from_slice(&p[..3]);
        mask.push(if has_alpha { 1.0 - p[3] } else { 0.0 });
    }
    LoadedImage {
        image: Array {
            shape: vec![1, h, w, 3],
            data: pix,
        },
        mask: Array {
            shape: vec![1, h, w],
            data: mask,
        },
        has_alpha,
        format,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("odelt-loadimage-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
        let f = File::create(path).unwrap();
        let mut e = png::Encoder::new(std::io::BufWriter::new(f), w, h);
        e.set_color(color);
        e.set_depth(png::BitDepth::Eight);
        e.write_header().unwrap().write_image_data(data).unwrap();
    }

    #[test]
    fn rgba_png_gives_image_and_inverted_alpha_mask() {
        let d = tmp("rgba");
        let px = [
            255u8, 0, 0, 255, 0, 255, 0, 0, 0, 0, 255, 128, 10, 20, 30, 255,
        ];
        write_png(&d.join("a.png"), 2, 2, png::ColorType::Rgba, &px);
        let li = load_image_file(&d.join("a.png"), "a.png", MAX_PIXELS).unwrap();
        assert_eq!(li.image.shape, vec![1, 2, 2, 3]);
        assert_eq!(li.mask.shape, vec![1, 2, 2]);
        assert!(li.has_alpha);
        assert_eq!(&li.image.data[..6], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(li.mask.data[0], 0.0);
        assert_eq!(li.mask.data[1], 1.0);
        assert!((li.mask.data[2] - (1.0 - 128.0 / 255.0)).abs() < 1e-6);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn grey_png_is_rgb_with_zero_mask() {
        let d = tmp("grey");
        write_png(
            &d.join("g.png"),
            3,
            1,
            png::ColorType::Grayscale,
            &[0, 51, 255],
        );
        let li = load_image_file(&d.join("g.png"), "g.png", MAX_PIXELS).unwrap();
        assert_eq!(
            li.image.data,
            vec![0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 1.0, 1.0, 1.0]
        );
        assert_eq!(li.mask.data, vec![0.0; 3]);
        assert!(!li.has_alpha);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let d = tmp("bad");
        std::fs::write(d.join("text.png"), b"hello, not a picture").unwrap();
        let e = load_image_file(&d.join("text.png"), "text.png", MAX_PIXELS).unwrap_err();
        assert!(e.to_string().contains("not a PNG, JPEG or WebP"), "{e}");
        // A GIF signature is recognised but not read.
        std::fs::write(d.join("x.gif"), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
        let e = load_image_file(&d.join("x.gif"), "x.gif", MAX_PIXELS).unwrap_err();
        assert!(e.to_string().contains("Gif"), "{e}");
        // Truncated data: the header reads, the pixels do not.
        write_png(
            &d.join("ok.png"),
            16,
            16,
            png::ColorType::Rgb,
            &[7u8; 16 * 16 * 3],
        );
        let bytes = std::fs::read(d.join("ok.png")).unwrap();
        std::fs::write(d.join("cut.png"), &bytes[..bytes.len() / 2]).unwrap();
        assert!(probe_image(&d.join("cut.png"), "cut.png", MAX_PIXELS).is_ok());
        let e = load_image_file(&d.join("cut.png"), "cut.png", MAX_PIXELS).unwrap_err();
        assert!(e.to_string().contains("cut.png"), "{e}");
        // Over the pixel limit.
        let e = probe_image(&d.join("ok.png"), "ok.png", 100).unwrap_err();
        assert!(e.to_string().contains("16x16 = 256 pixels"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names_stay_in_the_input_directory_and_listing_filters() {
        let d = tmp("names");
        let (input, output) = (d.join("input"), d.join("output"));
        std::fs::create_dir_all(input.join("sub")).unwrap();
        std::fs::create_dir_all(&output).unwrap();
        for f in ["a.png", "b.JPG", "notes.txt", ".hidden.png", "sub/c.webp"] {
            std::fs::write(input.join(f), b"x").unwrap();
        }
        std::fs::write(output.join("o.png"), b"x").unwrap();
        std::fs::write(d.join("secret.png"), b"x").unwrap();
        assert_eq!(list_images(&input), vec!["a.png", "b.JPG", "sub/c.webp"]);
        assert!(list_images(&d.join("missing")).is_empty());
        let dirs = ImageDirs {
            input: &input,
            output: &output,
            temp: &d.join("temp"),
        };
        assert!(resolve_image(&dirs, "sub/c.webp").is_ok());
        assert!(resolve_image(&dirs, "o.png [output]").is_ok());
        for bad in ["../secret.png", "/etc/passwd", "missing.png", "", "sub"] {
            let e = resolve_image(&dirs, bad).unwrap_err().to_string();
            assert!(!e.contains(&d.display().to_string()), "{e} shows a path");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.join("secret.png"), input.join("link.png")).unwrap();
            let e = resolve_image(&dirs, "link.png").unwrap_err().to_string();
            assert!(e.contains("outside") || e.contains("link"), "{e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
