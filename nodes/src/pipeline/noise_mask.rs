//! Noise masks for masked sampling (inpainting): ComfyUI's `noise_mask` of a LATENT. A MASK is `[B, H, W]` or
//! `[H, W]` f32 with 1 = "sample here" and 0 = "keep the source" (fractions blend), usually at the image's
//! resolution; the sampler needs it at the latent's, one per sample.
//!
//! How the sampler honours it ([`crate::sample::Start::Masked`]): outside the mask the state follows the source's
//! flow path `x_t = (1 − t)·noise + t·source` at every step (its velocity there is `source − noise`, so every
//! solver stays on the path) and ends at the source; inside, the model's velocity is integrated as usual.

use super::array::Array;
use super::image_scale::{resize, ScaleMethod};
use crate::error::{Error, Result};

/// The mask's `(B, H, W)`, from `[B, H, W]` or `[H, W]`.
pub fn mask_dims(mask: &Array) -> Result<(usize, usize, usize)> {
    match mask.shape.as_slice() {
        [h, w] => Ok((1, *h, *w)),
        [b, h, w] => Ok((*b, *h, *w)),
        s => Err(Error::invalid(format!(
            "a MASK is [B, H, W] or [H, W], got shape {s:?}"
        ))),
    }
}

/// The mask for a batch of `b` latents of `h` × `w`: resampled bilinearly to the latent's size (as ComfyUI's
/// samplers do), its batch repeated cyclically to `b` (one mask for all, or one per sample), values clamped to
/// [0, 1] (NaN = 0, keep). Returns `[b, h, w]`.
pub fn mask_for_latent(mask: &Array, b: usize, h: usize, w: usize) -> Result<Array> {
    let (mb, mh, mw) = mask_dims(mask)?;
    if mb == 0 || mh == 0 || mw == 0 {
        return Err(Error::invalid(format!(
            "the noise mask is empty (shape {:?})",
            mask.shape
        )));
    }
    if !b.is_multiple_of(mb) {
        return Err(Error::invalid(format!(
            "the noise mask has {mb} masks for a batch of {b} latents (give one mask, or one per latent)"
        )));
    }
    let m = Array {
        shape: vec![mb, mh, mw, 1],
        data: mask.data.clone(),
    };
    let r = resize(&m, h, w, ScaleMethod::Bilinear)?;
    let per = h * w;
    let mut out = Vec::with_capacity(b * per);
    for i in 0..b {
        let k = i % mb;
        out.extend(r.data[k * per..(k + 1) * per].iter().map(|&v| {
            if v.is_nan() {
                0.0
            } else {
                v.clamp(0.0, 1.0)
            }
        }));
    }
    Array::new(vec![b, h, w], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_fit_the_latent_batch_and_size() {
        let m = Array::new(
            vec![4, 4],
            (0..16).map(|i| if i % 4 < 2 { 1.0 } else { 0.0 }).collect(),
        )
        .unwrap();
        let r = mask_for_latent(&m, 3, 2, 2).unwrap();
        assert_eq!(r.shape, vec![3, 2, 2]);
        assert_eq!(&r.data[..4], &[1.0, 0.0, 1.0, 0.0]);
        assert_eq!(&r.data[8..], &[1.0, 0.0, 1.0, 0.0]);
        let two = Array::new(vec![2, 1, 1], vec![0.0, 2.0]).unwrap();
        let r = mask_for_latent(&two, 4, 1, 1).unwrap();
        assert_eq!(r.data, vec![0.0, 1.0, 0.0, 1.0]);
        assert!(mask_for_latent(&two, 3, 1, 1)
            .unwrap_err()
            .to_string()
            .contains("2 masks"));
        assert!(
            mask_for_latent(&Array::new(vec![1, 1, 1, 1], vec![0.0]).unwrap(), 1, 1, 1).is_err()
        );
    }
}
