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

/// A preview of the first sample of a model-space NHWC state `[B, S, S, C]`, at the state's own size: pixels
/// (C = 1 or 3, values in [-1, 1]) are shown directly, 4-channel latents through [`SD15_LATENT_RGB`], anything
/// else as the channel mean.
///
/// The sampler calls this while it samples, so it stays far below a forward: each pixel is converted once (~1 us
/// for the default 28x28 model). Like ComfyUI's latent previews it is not enlarged: the picture is small and
/// whoever shows it scales it (the editor draws previews at least 128 px wide, pixelated). The earlier 5x
/// enlargement to 140x140 cost ~13-18 us per preview, 1.1-1.5 % of the default model's forward, and five times the
/// bytes on the socket.
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
    let data = first.chunks_exact(c).flat_map(preview_rgb).collect();
    Ok(Rgb8 {
        width: w as u32,
        height: h as u32,
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
}
