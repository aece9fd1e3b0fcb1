//! IMAGE values (`[B, H, W, C]` f32 in 0..1) from pixel-space LATENTs, and the cheap previews the sampler sends
//! with its progress.

use candle_core::{DType, Device, Tensor};

use super::array::{with_cpu_f32, Array};
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

/// `v` in 0..1 as a byte, rounded half up; NaN is 0. (`+ 0.5` then truncation instead of `f32::round`, which
/// is a libm call on baseline x86-64: three per pixel were over half of a preview's time.)
fn to_byte(v: f32) -> u8 {
    // Rust's float-to-int casts saturate (below 0 → 0, above 255 → 255) and send NaN to 0: no branch.
    (v * 255.0 + 0.5) as u8
}

/// A preview of the first sample of a model-space NHWC state `[B, S, S, C]`, at the state's own size: pixels
/// (C = 1 or 3, values in [-1, 1]) are shown directly, 4-channel latents through [`SD15_LATENT_RGB`], anything
/// else as the channel mean.
///
/// The sampler calls this while it samples, so it stays far below a forward: each pixel is converted once, in
/// place from the tensor's storage (0.8-1.3 us for the default 28x28 model, about 0.14 % of its forward; through
/// candle ops and `f32::round` it was 7.7-14.6 us, docs/benchmarks.md). Like ComfyUI's latent previews it is not enlarged: the picture is small and
/// whoever shows it scales it (the editor draws previews at least 128 px wide, pixelated). The earlier 5x
/// enlargement to 140x140 cost ~13-18 us per preview, 1.1-1.5 % of the default model's forward, and five times the
/// bytes on the socket.
pub fn preview_nhwc(x: &Tensor) -> Result<Rgb8> {
    let (b, h, w, c) = x.dims4()?;
    if c == 0 || b == 0 {
        return Err(Error::invalid(format!(
            "a preview needs at least one sample with one channel, got a state of shape {:?}",
            x.dims()
        )));
    }
    let pixels = |first: &[f32]| -> Vec<u8> {
        let first = &first[..h * w * c];
        let mut data = vec![0u8; h * w * 3];
        let out = data.chunks_exact_mut(3);
        match c {
            // One loop per layout, each simple enough to vectorise (a per-pixel `match` was ~5 ns a pixel).
            1 => out
                .zip(first)
                .for_each(|(o, &v)| o.fill(to_byte((v + 1.0) * 0.5))),
            3 => out.zip(first.chunks_exact(3)).for_each(|(o, px)| {
                for j in 0..3 {
                    o[j] = to_byte((px[j] + 1.0) * 0.5);
                }
            }),
            _ => out
                .zip(first.chunks_exact(c))
                .for_each(|(o, px)| o.copy_from_slice(&mixed_rgb(px))),
        }
        data
    };
    let data = match with_cpu_f32(x, pixels) {
        Some(data) => data,
        None => pixels(
            &x.narrow(0, 0, 1)?
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        ),
    };
    Ok(Rgb8 {
        width: w as u32,
        height: h as u32,
        data,
    })
}

/// The preview colour of one pixel whose `C` channels are not grey or RGB (see [`preview_nhwc`], which converts
/// C = 1 and 3 in its own loops).
fn mixed_rgb(px: &[f32]) -> [u8; 3] {
    let (r, g, b) = match px.len() {
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
    fn bytes_round_half_up_and_clamp() {
        assert_eq!(
            [0.0, 1.0, 0.5, -3.0, 7.0, f32::NAN].map(to_byte),
            [0, 255, 128, 0, 255, 0]
        );
        // Each of the 256 levels is hit at its centre and stays put up to just below the next half step.
        for k in 0..=255u8 {
            assert_eq!(to_byte(k as f32 / 255.0), k);
            if k < 255 {
                assert_eq!(to_byte((k as f32 + 0.49) / 255.0), k);
                assert_eq!(to_byte((k as f32 + 0.51) / 255.0), k + 1);
            }
        }
    }

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
    fn previews_are_the_first_sample_at_its_own_size() {
        let x = Tensor::zeros((2, 8, 8, 4), DType::F32, &Device::Cpu).unwrap();
        let p = preview_nhwc(&x).unwrap();
        assert_eq!((p.width, p.height), (8, 8));
        assert_eq!(p.data.len(), 8 * 8 * 3);
        assert!(p.data.iter().all(|&v| v == 128));
        let x = Tensor::ones((1, 28, 28, 1), DType::F32, &Device::Cpu).unwrap();
        let p = preview_nhwc(&x).unwrap();
        assert_eq!((p.width, p.height), (28, 28));
        assert!(p.data.iter().all(|&v| v == 255));
        let x = Tensor::zeros((1, 4, 4, 0), DType::F32, &Device::Cpu).unwrap();
        assert!(preview_nhwc(&x).is_err());
        let x = Tensor::zeros((0, 4, 4, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(preview_nhwc(&x).is_err());
    }

    #[test]
    fn preview_pixels_keep_their_place_and_colour() {
        // Batch 2, 2 rows x 3 columns, 3 channels: pixel (y, x) of the first sample is (v, -v, 0) with
        // v = (3y + x) / 5 - 1 (-1 .. 0); the second sample must not show.
        let (h, w) = (2, 3);
        let mut vals = Vec::new();
        for b in 0..2 {
            for i in 0..h * w {
                let v = if b == 0 { i as f32 / 5.0 - 1.0 } else { 1.0 };
                vals.extend([v, -v, 0.0]);
            }
        }
        let x = Tensor::from_vec(vals, (2, h, w, 3), &Device::Cpu).unwrap();
        let p = preview_nhwc(&x).unwrap();
        assert_eq!((p.width, p.height), (3, 2));
        for i in 0..h * w {
            let v = i as f32 / 5.0 - 1.0;
            let want = [to_byte((v + 1.0) / 2.0), to_byte((1.0 - v) / 2.0), 128];
            assert_eq!(p.data[3 * i..3 * i + 3], want, "pixel {i}");
        }
        // Two channels: their mean, grey.
        let x = Tensor::from_vec(vec![1.0f32, -0.5], (1, 1, 1, 2), &Device::Cpu).unwrap();
        assert_eq!(preview_nhwc(&x).unwrap().data, [159, 159, 159]);
    }

    #[test]
    fn views_and_other_dtypes_preview_as_their_contiguous_f32_copy() {
        // The in-place path takes contiguous f32 CPU tensors (also a later sample narrowed out of a batch); a
        // strided view or an f16 state goes through candle and must give the same picture.
        let vals: Vec<f32> = (0..2 * 4 * 5 * 3)
            .map(|i| (i % 17) as f32 / 8.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(vals, (2, 4, 5, 3), &Device::Cpu).unwrap();
        let second = x.narrow(0, 1, 1).unwrap();
        let want = preview_nhwc(&second.copy().unwrap()).unwrap();
        assert_eq!(preview_nhwc(&second).unwrap(), want);
        // [1, 5, 4, 3] transposed to a strided [1, 4, 5, 3].
        let t = x
            .narrow(0, 0, 1)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let strided = t.transpose(1, 2).unwrap();
        assert!(!strided.is_contiguous());
        let want = preview_nhwc(&strided.contiguous().unwrap()).unwrap();
        assert_eq!(preview_nhwc(&strided).unwrap(), want);
        let half = x.to_dtype(DType::F16).unwrap();
        let want = preview_nhwc(&half.to_dtype(DType::F32).unwrap()).unwrap();
        assert_eq!(preview_nhwc(&half).unwrap(), want);
    }
}
