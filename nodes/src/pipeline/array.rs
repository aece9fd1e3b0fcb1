//! A plain f32 array (shape + row-major values): how LATENT and IMAGE values enter and leave the pipeline, so
//! callers (the plugin) need no tensor library.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

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

/// `[B, C, H, W]` → `[B, H, W, C]`, scaled by `scale`, on `device`.
pub fn nchw_to_nhwc(a: &Array, scale: f64, device: &Device) -> Result<Tensor> {
    a.dims4("LATENT", "[B, C, H, W]")?;
    let t = a.to_tensor(device)?.permute((0, 2, 3, 1))?.contiguous()?;
    Ok(if scale == 1.0 {
        t
    } else {
        t.affine(scale, 0.0)?
    })
}

/// `[B, H, W, C]` → `[B, C, H, W]` f32 array, divided by `scale`.
pub fn nhwc_to_nchw(t: &Tensor, scale: f64) -> Result<Array> {
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
}
