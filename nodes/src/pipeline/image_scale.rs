//! ImageScale: IMAGE `[B, H, W, C]` (and its MASK `[B, H, W]`) to another size — nearest, bilinear or area
//! (box average) resampling; stretched, centre-cropped to the target's aspect ratio, or fitted inside and padded —
//! and grey/RGB conversion.
//!
//! Sampling positions are pixel centres (`align_corners = False`, as PyTorch's and PIL's resizers). Padding fills
//! the image with black and the mask with 1 ("generate here"), so a padded picture is ready to be outpainted.

use crate::error::{Error, Result};

use super::array::Array;

/// Resampling method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleMethod {
    /// The nearest source pixel (hard edges; exact for integer up-scaling).
    Nearest,
    /// Linear interpolation between the 4 nearest pixel centres.
    Bilinear,
    /// The average of the source pixels each output pixel covers, weighted by the area covered (down-scaling
    /// without aliasing; integer up-scaling repeats pixels).
    Area,
}

/// The method names of the node's combo (ComfyUI's ImageScale names; `nearest` is accepted too).
pub const SCALE_METHODS: [&str; 3] = ["nearest-exact", "bilinear", "area"];

impl std::str::FromStr for ScaleMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nearest" | "nearest-exact" => Ok(ScaleMethod::Nearest),
            "bilinear" => Ok(ScaleMethod::Bilinear),
            "area" => Ok(ScaleMethod::Area),
            o => Err(Error::invalid(format!(
                "unknown scale method {o:?} (one of {})",
                SCALE_METHODS.join(", ")
            ))),
        }
    }
}

/// How the picture is fitted to a size of another aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Scaled to the size, whatever the aspect ratio.
    Stretch,
    /// The centre part with the target's aspect ratio, scaled.
    Crop,
    /// Scaled to fit inside, centred, the rest black (mask 1).
    Pad,
}

/// The fit names of the node's `crop` combo: ComfyUI's ImageScale names (`disabled` = stretch, `center` = centre
/// crop) and `pad`; `stretch` and `crop` are accepted too.
pub const FITS: [&str; 3] = ["disabled", "center", "pad"];

impl std::str::FromStr for Fit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stretch" | "disabled" => Ok(Fit::Stretch),
            "crop" | "center" => Ok(Fit::Crop),
            "pad" => Ok(Fit::Pad),
            o => Err(Error::invalid(format!(
                "unknown fit {o:?} (one of {})",
                FITS.join(", ")
            ))),
        }
    }
}

/// Colour conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// The channels as they are.
    Keep,
    /// Luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B) in all three channels.
    Grayscale,
    /// Three channels (a one-channel image repeated).
    Rgb,
}

/// The colour names of the node's combo.
pub const COLOR_MODES: [&str; 3] = ["keep", "grayscale", "rgb"];

impl std::str::FromStr for ColorMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "keep" => Ok(ColorMode::Keep),
            "grayscale" => Ok(ColorMode::Grayscale),
            "rgb" => Ok(ColorMode::Rgb),
            o => Err(Error::invalid(format!(
                "unknown colour mode {o:?} (one of {})",
                COLOR_MODES.join(", ")
            ))),
        }
    }
}

/// The largest output side ImageScale makes.
pub const MAX_SIDE: usize = 16384;

/// Luma of an RGB pixel (BT.601, as PIL's `convert("L")`).
pub fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// An IMAGE `[B, H, W, C]` with `c_out` channels: 3 → 1 by [`luma`], 1 → 3 by repetition, 4 → 3 by dropping
/// alpha, equal counts unchanged.
pub fn convert_channels(img: &Array, c_out: usize) -> Result<Array> {
    let [b, h, w, c] = img.dims4("image", "[B, H, W, C]")?;
    if c == c_out {
        return Ok(img.clone());
    }
    let mut out = Vec::with_capacity(b * h * w * c_out);
    for px in img.data.chunks_exact(c) {
        match (c, c_out) {
            (3 | 4, 1) => out.push(luma(px[0], px[1], px[2])),
            (1, 3) => out.extend([px[0]; 3]),
            (4, 3) => out.extend_from_slice(&px[..3]),
            _ => {
                return Err(Error::invalid(format!(
                    "cannot convert a {c}-channel image to {c_out} channels (1, 3 or RGBA images are converted)"
                )))
            }
        }
    }
    Array::new(vec![b, h, w, c_out], out)
}

/// Applies a [`ColorMode`].
pub fn apply_color(img: &Array, mode: ColorMode) -> Result<Array> {
    let [_, _, _, c] = img.dims4("image", "[B, H, W, C]")?;
    match mode {
        ColorMode::Keep => Ok(img.clone()),
        ColorMode::Rgb => convert_channels(img, 3),
        ColorMode::Grayscale => {
            let grey = if c == 1 {
                img.clone()
            } else {
                convert_channels(img, 1)?
            };
            convert_channels(&grey, 3)
        }
    }
}

/// Source rows/columns and weights of each output position along one axis of `n_in` → `n_out` samples.
fn taps(n_in: usize, n_out: usize, method: ScaleMethod) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| match method {
            ScaleMethod::Nearest => {
                let s = (((o as f64 + 0.5) * scale).floor() as usize).min(n_in - 1);
                vec![(s, 1.0)]
            }
            ScaleMethod::Bilinear => {
                let s = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = s.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                let f = (s - i0 as f64) as f32;
                if i1 == i0 || f == 0.0 {
                    vec![(i0, 1.0)]
                } else {
                    vec![(i0, 1.0 - f), (i1, f)]
                }
            }
            ScaleMethod::Area => {
                let (a, b) = (o as f64 * scale, (o as f64 + 1.0) * scale);
                let mut v = Vec::new();
                let mut i = a.floor() as usize;
                while (i as f64) < b && i < n_in {
                    let lo = a.max(i as f64);
                    let hi = b.min(i as f64 + 1.0);
                    if hi > lo {
                        v.push((i, ((hi - lo) / scale) as f32));
                    }
                    i += 1;
                }
                v
            }
        })
        .collect()
}

/// Resamples a `[B, H, W, C]` array to `[B, out_h, out_w, C]` (separably: rows, then columns).
pub fn resize(img: &Array, out_h: usize, out_w: usize, method: ScaleMethod) -> Result<Array> {
    let [b, h, w, c] = img.dims4("image", "[B, H, W, C]")?;
    if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "cannot resize a {w}x{h} image to {out_w}x{out_h}"
        )));
    }
    if (out_h, out_w) == (h, w) {
        return Ok(img.clone());
    }
    let ty = taps(h, out_h, method);
    let tx = taps(w, out_w, method);
    let mut out = vec![0f32; b * out_h * out_w * c];
    let mut row = vec![0f32; w * c];
    for bi in 0..b {
        let src = &img.data[bi * h * w * c..(bi + 1) * h * w * c];
        for (oy, tapy) in ty.iter().enumerate() {
            row.iter_mut().for_each(|v| *v = 0.0);
            for &(sy, wy) in tapy {
                let s = &src[sy * w * c..(sy + 1) * w * c];
                for (r, v) in row.iter_mut().zip(s) {
                    *r += wy * v;
                }
            }
            let dst = &mut out[(bi * out_h + oy) * out_w * c..(bi * out_h + oy + 1) * out_w * c];
            for (ox, tapx) in tx.iter().enumerate() {
                for &(sx, wx) in tapx {
                    for k in 0..c {
                        dst[ox * c + k] += wx * row[sx * c + k];
                    }
                }
            }
        }
    }
    Array::new(vec![b, out_h, out_w, c], out)
}

/// A window of `[B, H, W, C]`: rows `y..y + h2`, columns `x..x + w2`.
fn crop(img: &Array, y: usize, x: usize, h2: usize, w2: usize) -> Array {
    let [b, h, w, c] = [img.shape[0], img.shape[1], img.shape[2], img.shape[3]];
    let mut out = Vec::with_capacity(b * h2 * w2 * c);
    for bi in 0..b {
        for yy in y..y + h2 {
            let start = ((bi * h + yy) * w + x) * c;
            out.extend_from_slice(&img.data[start..start + w2 * c]);
        }
    }
    Array {
        shape: vec![b, h2, w2, c],
        data: out,
    }
}

/// `img` placed at (`y`, `x`) in a `[B, out_h, out_w, C]` array filled with `fill`.
fn pad(img: &Array, out_h: usize, out_w: usize, y: usize, x: usize, fill: f32) -> Array {
    let [b, h, w, c] = [img.shape[0], img.shape[1], img.shape[2], img.shape[3]];
    let mut out = vec![fill; b * out_h * out_w * c];
    for bi in 0..b {
        for yy in 0..h {
            let s = ((bi * h + yy) * w) * c;
            let d = ((bi * out_h + yy + y) * out_w + x) * c;
            out[d..d + w * c].copy_from_slice(&img.data[s..s + w * c]);
        }
    }
    Array {
        shape: vec![b, out_h, out_w, c],
        data: out,
    }
}

/// Fits one `[B, H, W, C]` array to `out_h` × `out_w`; `fill` is what padding adds.
fn fit_one(
    img: &Array,
    out_h: usize,
    out_w: usize,
    method: ScaleMethod,
    fit: Fit,
    fill: f32,
) -> Result<Array> {
    let [_, h, w, _] = img.dims4("image", "[B, H, W, C]")?;
    match fit {
        Fit::Stretch => resize(img, out_h, out_w, method),
        Fit::Crop => {
            // The largest centred window with the target's aspect ratio.
            let (ch, cw) = if w * out_h > h * out_w {
                (
                    h,
                    ((h * out_w) as f64 / out_h as f64).round().max(1.0) as usize,
                )
            } else {
                (
                    ((w * out_h) as f64 / out_w as f64).round().max(1.0) as usize,
                    w,
                )
            };
            let (ch, cw) = (ch.min(h), cw.min(w));
            let c = crop(img, (h - ch) / 2, (w - cw) / 2, ch, cw);
            resize(&c, out_h, out_w, method)
        }
        Fit::Pad => {
            let s = (out_h as f64 / h as f64).min(out_w as f64 / w as f64);
            let ih = ((h as f64 * s).round() as usize).clamp(1, out_h);
            let iw = ((w as f64 * s).round() as usize).clamp(1, out_w);
            let inner = resize(img, ih, iw, method)?;
            Ok(pad(
                &inner,
                out_h,
                out_w,
                (out_h - ih) / 2,
                (out_w - iw) / 2,
                fill,
            ))
        }
    }
}

/// What [`scale_image`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleOptions {
    pub width: usize,
    pub height: usize,
    pub method: ScaleMethod,
    pub fit: Fit,
    pub color: ColorMode,
}

/// Scales an IMAGE `[B, H, W, C]` and its MASK (`[B, H, W]` or `[H, W]` of the image's size; `None`: no mask,
/// i.e. zeros) the same way. Returns the IMAGE and a `[B', out_h, out_w]` MASK (1 where padding was added).
pub fn scale_image(img: &Array, mask: Option<&Array>, o: &ScaleOptions) -> Result<(Array, Array)> {
    let [b, h, w, _] = img.dims4("image", "[B, H, W, C]")?;
    if o.width == 0 || o.height == 0 || o.width > MAX_SIDE || o.height > MAX_SIDE {
        return Err(Error::invalid(format!(
            "the target size {}x{} is outside 1..={MAX_SIDE}",
            o.width, o.height
        )));
    }
    let img = apply_color(img, o.color)?;
    let out = fit_one(&img, o.height, o.width, o.method, o.fit, 0.0)?;
    let m = match mask {
        None => Array {
            shape: vec![b, h, w, 1],
            data: vec![0.0; b * h * w],
        },
        Some(m) => {
            let (mb, mh, mw) = match m.shape.as_slice() {
                [mh, mw] => (1, *mh, *mw),
                [mb, mh, mw] => (*mb, *mh, *mw),
                s => {
                    return Err(Error::invalid(format!(
                        "mask must be [B, H, W] or [H, W], got shape {s:?}"
                    )))
                }
            };
            if (mh, mw) != (h, w) {
                return Err(Error::invalid(format!(
                    "the mask is {mw}x{mh} but the image is {w}x{h}; they are scaled together, so their sizes \
                     must match"
                )));
            }
            Array {
                shape: vec![mb, mh, mw, 1],
                data: m.data.clone(),
            }
        }
    };
    let mm = fit_one(&m, o.height, o.width, o.method, o.fit, 1.0)?;
    let mut ms = mm.shape.clone();
    ms.pop();
    Ok((out, Array::new(ms, mm.data)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(h: usize, w: usize, c: usize, f: impl Fn(usize, usize, usize) -> f32) -> Array {
        let mut d = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    d.push(f(y, x, k));
                }
            }
        }
        Array::new(vec![1, h, w, c], d).unwrap()
    }

    #[test]
    fn methods_agree_on_simple_cases() {
        let a = img(2, 2, 1, |y, x, _| (y * 2 + x) as f32);
        let n = resize(&a, 4, 4, ScaleMethod::Nearest).unwrap();
        assert_eq!(&n.data[..4], &[0.0, 0.0, 1.0, 1.0]);
        let ar = resize(&a, 4, 4, ScaleMethod::Area).unwrap();
        assert_eq!(ar.data, n.data);
        let b = resize(&a, 4, 4, ScaleMethod::Bilinear).unwrap();
        assert_eq!(&b.data[..4], &[0.0, 0.25, 0.75, 1.0]);
        // 4x4 → 2x2 area = mean of each 2x2 block.
        let big = img(4, 4, 1, |y, x, _| (y * 4 + x) as f32);
        let s = resize(&big, 2, 2, ScaleMethod::Area).unwrap();
        assert_eq!(s.data, vec![2.5, 4.5, 10.5, 12.5]);
        // Area conserves the mean at non-integer ratios.
        let odd = img(5, 7, 1, |y, x, _| ((y * 7 + x) % 3) as f32);
        let r = resize(&odd, 3, 2, ScaleMethod::Area).unwrap();
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&r.data) - mean(&odd.data)).abs() < 1e-5);
        assert!(resize(&a, 0, 4, ScaleMethod::Nearest).is_err());
    }

    #[test]
    fn crop_and_pad_keep_the_aspect_ratio() {
        // A 2 (h) x 4 (w) picture: left half 0, right half 1.
        let a = img(2, 4, 1, |_, x, _| if x < 2 { 0.0 } else { 1.0 });
        let o = ScaleOptions {
            width: 2,
            height: 2,
            method: ScaleMethod::Nearest,
            fit: Fit::Crop,
            color: ColorMode::Keep,
        };
        let (c, m) = scale_image(&a, None, &o).unwrap();
        assert_eq!(c.data, vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(m.shape, vec![1, 2, 2]);
        assert_eq!(m.data, vec![0.0; 4]);
        let (p, m) = scale_image(
            &a,
            None,
            &ScaleOptions {
                fit: Fit::Pad,
                width: 4,
                height: 4,
                ..o
            },
        )
        .unwrap();
        // Rows 1, 2 hold the picture; rows 0 and 3 are padding (black, mask 1).
        assert_eq!(&p.data[4..8], &[0.0, 0.0, 1.0, 1.0]);
        assert_eq!(&p.data[..4], &[0.0; 4]);
        assert_eq!(&m.data[..4], &[1.0; 4]);
        assert_eq!(&m.data[4..12], &[0.0; 8]);
        let wrong = Array::new(vec![1, 3, 3], vec![0.0; 9]).unwrap();
        let e = scale_image(&a, Some(&wrong), &o).unwrap_err().to_string();
        assert!(e.contains("3x3") && e.contains("4x2"), "{e}");
    }

    #[test]
    fn colour_conversions() {
        let a = img(1, 1, 3, |_, _, k| [1.0, 0.5, 0.0][k]);
        let g = apply_color(&a, ColorMode::Grayscale).unwrap();
        let l = luma(1.0, 0.5, 0.0);
        assert_eq!(g.data, vec![l, l, l]);
        assert_eq!(convert_channels(&a, 1).unwrap().data, vec![l]);
        let one = img(1, 2, 1, |_, x, _| x as f32);
        assert_eq!(
            apply_color(&one, ColorMode::Rgb).unwrap().data,
            vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
        );
        assert!(convert_channels(&img(1, 1, 2, |_, _, _| 0.0), 3).is_err());
    }
}
