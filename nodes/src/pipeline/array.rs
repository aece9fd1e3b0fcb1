//! A plain f32 array (shape + row-major values): how LATENT and IMAGE values enter and leave the pipeline, so
//! callers (the plugin) need no tensor library.

use candle_core::{DType, Device, Storage, Tensor};

use crate::error::{Error, Result};

/// Runs `f` on the values of a contiguous f32 CPU tensor in place, without a copy or a tensor op; `None` for
/// anything else (another dtype or device, a strided view), where callers take candle's general path. The
/// sampler's per-call and per-step conversions go through here: each candle op costs about a microsecond on its
/// own, several per preview were ~1 % of the default model's forward.
pub fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let (guard, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    match &*guard {
        Storage::Cpu(cpu) => cpu.as_slice::<f32>().ok().map(|v| f(&v[start..end])),
        _ => None,
    }
}

/// Row-major f32 values with their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl Array {
    /// Checks that the data length matches the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::invalid(format!(
                "shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Array { shape, data })
    }

    /// Copies a tensor out (any float dtype, any device) as f32.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let shape = t.dims().to_vec();
        if let Some(data) = with_cpu_f32(t, <[f32]>::to_vec) {
            return Ok(Array { shape, data });
        }
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Array { shape, data })
    }

    /// The values as a tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            self.shape.as_slice(),
            device,
        )?)
    }

    /// The 4 dimensions of a rank-4 array, or an error naming `what` and the expected layout.
    pub fn dims4(&self, what: &str, layout: &str) -> Result<[usize; 4]> {
        match self.shape.as_slice() {
            [a, b, c, d] => Ok([*a, *b, *c, *d]),
            s => Err(Error::invalid(format!(
                "{what} must be a rank-4 {layout} array, got shape {s:?}"
            ))),
        }
    }
}

/// Per sample, its `[r, k]` matrix transposed to `[k, r]`, each value scaled as candle's `affine(scale, 0)` does
/// (`v * scale + 0`; scale 1 leaves the values alone, -0 included). One row or column: a copy.
fn transpose_samples(src: &[f32], r: usize, k: usize, scale: f64) -> Vec<f32> {
    fn with(src: &[f32], r: usize, k: usize, f: impl Fn(f32) -> f32) -> Vec<f32> {
        // (`r * k == 0` with values present is a malformed array: copied, the tensor's shape check refuses it.)
        if r == 1 || k == 1 || r * k == 0 || src.is_empty() {
            return src.iter().map(|&v| f(v)).collect();
        }
        let mut out = vec![0f32; src.len()];
        for (s, d) in src.chunks_exact(r * k).zip(out.chunks_exact_mut(r * k)) {
            for (i, row) in s.chunks_exact(k).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    d[j * r + i] = f(v);
                }
            }
        }
        out
    }
    let s = scale as f32;
    if scale == 1.0 {
        with(src, r, k, |v| v)
    } else {
        with(src, r, k, |v| v * s + 0.0)
    }
}

/// `[B, C, H, W]` → `[B, H, W, C]`, scaled by `scale`, on `device`.
pub fn nchw_to_nhwc(a: &Array, scale: f64, device: &Device) -> Result<Tensor> {
    let [b, c, h, w] = a.dims4("LATENT", "[B, C, H, W]")?;
    if device.is_cpu() {
        // One pass, one tensor (candle's permute + copy + affine, bit for bit).
        let out = transpose_samples(&a.data, c, h * w, scale);
        return Ok(Tensor::from_vec(out, (b, h, w, c), device)?);
    }
    let t = a.to_tensor(device)?.permute((0, 2, 3, 1))?.contiguous()?;
    Ok(if scale == 1.0 {
        t
    } else {
        t.affine(scale, 0.0)?
    })
}

/// `[B, H, W, C]` → `[B, C, H, W]` f32 array, divided by `scale`.
pub fn nhwc_to_nchw(t: &Tensor, scale: f64) -> Result<Array> {
    if let Ok((b, h, w, c)) = t.dims4() {
        let nchw = |v: &[f32]| transpose_samples(v, h * w, c, 1.0 / scale);
        if let Some(data) = with_cpu_f32(t, nchw) {
            return Array::new(vec![b, c, h, w], data);
        }
    }
    let t = t.permute((0, 3, 1, 2))?.contiguous()?;
    let t = if scale == 1.0 {
        t
    } else {
        t.affine(1.0 / scale, 0.0)?
    };
    Array::from_tensor(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trip_with_scale() {
        let a = Array::new(vec![1, 2, 2, 3], (0..12).map(|v| v as f32).collect()).unwrap();
        let t = nchw_to_nhwc(&a, 0.5, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 2, 3, 2]);
        // NHWC [0, 0, 0, c] = NCHW [0, c, 0, 0] * 0.5 = c * 6 * 0.5
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(&v[..2], &[0.0, 3.0]);
        let back = nhwc_to_nchw(&t, 0.5).unwrap();
        assert_eq!(back, a);
        assert!(Array::new(vec![2, 2], vec![1.0]).is_err());
        assert!(nchw_to_nhwc(
            &Array::new(vec![4], vec![0.0; 4]).unwrap(),
            1.0,
            &Device::Cpu
        )
        .is_err());
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn layout_loops_match_candles_permute_and_affine_bit_for_bit() {
        let (b, c, h, w) = (2, 4, 3, 5);
        let mut data: Vec<f32> = (0..b * c * h * w)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        data[1] = -0.0;
        data[7] = f32::NAN;
        data[9] = f32::INFINITY;
        let a = Array::new(vec![b, c, h, w], data).unwrap();
        for scale in [1.0, 0.18215, 5.4] {
            let fast = nchw_to_nhwc(&a, scale, &Device::Cpu).unwrap();
            let t = a
                .to_tensor(&Device::Cpu)
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap();
            // The general path as it was: no affine at scale 1 (it would turn -0 into +0).
            let affine = |t: Tensor, s: f64| {
                if scale == 1.0 {
                    t
                } else {
                    t.affine(s, 0.0).unwrap()
                }
            };
            let want = affine(t.contiguous().unwrap(), scale);
            assert_eq!(fast.dims(), want.dims());
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(bits(&flat(&fast)), bits(&flat(&want)), "scale {scale}");
            let back = nhwc_to_nchw(&fast, scale).unwrap();
            let want = fast.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
            let want = affine(want, 1.0 / scale);
            assert_eq!(back.shape, vec![b, c, h, w]);
            assert_eq!(bits(&back.data), bits(&flat(&want)), "scale {scale}");
            // A strided NHWC view takes candle's path and agrees.
            let strided = fast
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            assert_eq!(
                bits(&nhwc_to_nchw(&strided, scale).unwrap().data),
                bits(&back.data)
            );
        }
        // Values that do not fill the shape (the fields are public) are an error, not a panic.
        for (shape, n) in [(vec![1, 0, 3, 2], 4), (vec![2, 3, 2, 2], 5)] {
            let bad = Array {
                shape,
                data: vec![1.0; n],
            };
            assert!(nchw_to_nhwc(&bad, 0.5, &Device::Cpu).is_err());
        }
        let empty = Tensor::zeros((1, 0, 3, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(nhwc_to_nchw(&empty, 1.0).unwrap().shape, vec![1, 2, 0, 3]);
    }
}
