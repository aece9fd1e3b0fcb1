//! IMAGE values (`[B, H, W, C]` f32 in 0..1) from pixel-space LATENTs, and the cheap previews the sampler sends
//! with its progress.

use candle_core::{DType, Device, Tensor};

use super::array::Array;
use crate::error::{Error, Result};

/// Linear latent → RGB factors of the SD 1.x VAE latent space (rows: latent channels, columns: R, G, B), the
/// well-known approximation ComfyUI's previews use; applied to model-space (×0.18215) latents and followed by
/// `(rgb + 1) / 2`.
pub const SD15_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// An 8-bit RGB picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes, row-major.
    pub data: Vec<u8>,
}

fn to_byte(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// A preview of the first sample of a model-space NHWC state `[B, S, S, C]`: pixels (C = 1 or 3, values in
/// [-1, 1]) are shown directly, 4-channel latents through [`SD15_LATENT_RGB`], anything else as the channel mean.
/// Small images are enlarged (nearest neighbour) to at least 128 px for visibility.
///
/// The sampler calls this after every velocity evaluation, so it is kept far below a forward: each source pixel
/// is converted once, written `scale` times into its enlarged row, and the row is copied `scale - 1` times (for
/// the default 28x28 model ~5 us instead of the ~40 us of one 3-byte copy per output pixel).
pub fn preview_nhwc(x: &Tensor) -> Result<Rgb8> {
    let (_, h, w, c) = x.dims4()?;
    if c == 0 {
        return Err(Error::invalid("a preview needs at least one channel"));
    }
    let first: Vec<f32> = x
        .narrow(0, 0, 1)?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let scale = 128usize.div_ceil(h.max(w).max(1)).clamp(1, 16);
    let (bw, bh) = (w * scale, h * scale);
    let row_bytes = bw * 3;
    let mut data = vec![0u8; row_bytes * bh];
    if row_bytes > 0 {
        for (src, dst) in first
            .chunks_exact(w * c)
            .zip(data.chunks_exact_mut(row_bytes * scale))
        {
            let (row, copies) = dst.split_at_mut(row_bytes);
            for (px, out) in src.chunks_exact(c).zip(row.chunks_exact_mut(3 * scale)) {
                let rgb = preview_rgb(px);
                for o in out.chunks_exact_mut(3) {
                    o.copy_from_slice(&rgb);
                }
            }
            for copy in copies.chunks_exact_mut(row_bytes) {
                copy.copy_from_slice(row);
            }
        }
    }
    Ok(Rgb8 {
        width: bw as u32,
        height: bh as u32,
        data,
    })
}

/// The preview colour of one pixel's `C` channel values (see [`preview_nhwc`]).
fn preview_rgb(px: &[f32]) -> [u8; 3] {
    let (r, g, b) = match px.len() {
        1 => (px[0], px[0], px[0]),
        3 => (px[0], px[1], px[2]),
        4 => {
            let mut o = [0f32; 3];
            for (k, f) in SD15_LATENT_RGB.iter().enumerate() {
                for j in 0..3 {
                    o[j] += px[k] * f[j];
                }
            }
            (o[0], o[1], o[2])
        }
        c => {
            let m = px.iter().sum::<f32>() / c as f32;
            (m, m, m)
        }
    };
    [r, g, b].map(|v| to_byte((v + 1.0) * 0.5))
}

/// A pixel-space LATENT (NCHW, values in [-1, 1]) as an IMAGE `[B, H, W, 3]` in 0..1: `(x + 1) / 2`, clamped;
/// one grey channel is repeated into RGB. 4-channel (VAE) latents are refused: they need a VAE.
pub fn pixels_to_image(latent: &Array) -> Result<Array> {
    let [b, c, h, w] = latent.dims4("samples", "[B, C, H, W]")?;
    if c != 1 && c != 3 {
        return Err(Error::invalid(format!(
            "samples have {c} channels: only 1- or 3-channel pixel-space latents decode without a VAE \
             (connect a VAE for latent-space models)"
        )));
    }
    let mut out = Vec::with_capacity(b * h * w * 3);
    for bi in 0..b {
        for y in 0..h {
            for x in 0..w {
                for k in 0..3 {
                    let ch = if c == 1 { 0 } else { k };
                    let v = latent.data[((bi * c + ch) * h + y) * w + x];
                    let v = if v.is_nan() {
                        0.0
                    } else {
                        ((v + 1.0) * 0.5).clamp(0.0, 1.0)
                    };
                    out.push(v);
                }
            }
        }
    }
    Array::new(vec![b, h, w, 3], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_pixels_become_rgb_images() {
        let a = Array::new(vec![1, 1, 1, 2], vec![-1.0, 1.0]).unwrap();
        let img = pixels_to_image(&a).unwrap();
        assert_eq!(img.shape, vec![1, 1, 2, 3]);
        assert_eq!(img.data, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let lat = Array::new(vec![1, 4, 1, 1], vec![0.0; 4]).unwrap();
        let e = pixels_to_image(&lat).unwrap_err().to_string();
        assert!(e.contains("VAE"), "{e}");
    }

    #[test]
    fn previews_are_rgb_and_enlarged() {
        let x = Tensor::zeros((2, 8, 8, 4), DType::F32, &Device::Cpu).unwrap();
        let p = preview_nhwc(&x).unwrap();
        assert_eq!((p.width, p.height), (128, 128));
        assert_eq!(p.data.len(), 128 * 128 * 3);
        assert!(p.data.iter().all(|&v| v == 128));
        let x = Tensor::ones((1, 28, 28, 1), DType::F32, &Device::Cpu).unwrap();
        let p = preview_nhwc(&x).unwrap();
        assert_eq!(p.width, 140);
        assert!(p.data.iter().all(|&v| v == 255));
        let x = Tensor::zeros((1, 4, 4, 0), DType::F32, &Device::Cpu).unwrap();
        assert!(preview_nhwc(&x).is_err());
    }

    /// The preview's enlargement as it was first written (one 3-byte copy per output pixel): the fast one must give
    /// the same bytes.
    fn preview_reference(x: &Tensor) -> Rgb8 {
        let (_, h, w, c) = x.dims4().unwrap();
        let first: Vec<f32> = x
            .narrow(0, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // The colours are `preview_rgb`'s (unchanged); the enlargement is the one first written.
        let rgb: Vec<u8> = first.chunks_exact(c).flat_map(preview_rgb).collect();
        let scale = 128usize.div_ceil(h.max(w).max(1)).clamp(1, 16);
        let (bw, bh) = (w * scale, h * scale);
        let mut big = Vec::with_capacity(bw * bh * 3);
        for y in 0..bh {
            for xx in 0..bw {
                let i = ((y / scale) * w + xx / scale) * 3;
                big.extend_from_slice(&rgb[i..i + 3]);
            }
        }
        Rgb8 {
            width: bw as u32,
            height: bh as u32,
            data: big,
        }
    }

    #[test]
    fn fast_previews_match_the_reference_bytes() {
        let dev = Device::Cpu;
        for (seed, (b, h, w, c)) in [
            (1, 28, 28, 1),
            (2, 32, 32, 4),
            (1, 8, 8, 3),
            (1, 5, 7, 2),
            (3, 130, 129, 1),
            (1, 1, 1, 4),
            (1, 200, 3, 3),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = seed as u64;
            let n = b * h * w * c;
            let vals: Vec<f32> = (0..n)
                .map(|i| 1.6 * (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0))
                .collect();
            let x = Tensor::from_vec(vals, (b, h, w, c), &dev).unwrap();
            let fast = preview_nhwc(&x).unwrap();
            assert_eq!(fast, preview_reference(&x), "{b}x{h}x{w}x{c}");
            assert_eq!(fast.data.len(), (fast.width * fast.height * 3) as usize);
        }
    }
}
