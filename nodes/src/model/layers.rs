//! Small building blocks shared by the DiT modules: Flax-layout dense layers, affine-free LayerNorm, modulation.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::params::{DenseParams, Loader};

/// LayerNorm epsilon of every official norm.
pub const LN_EPS: f64 = 1e-6;

/// A Flax `Dense`: `y = x @ kernel + bias` with `kernel` `[in, out]`.
#[derive(Debug, Clone)]
pub struct Dense {
    kernel: Tensor,
    bias: Tensor,
}

impl Dense {
    pub fn new(kernel: Tensor, bias: Tensor) -> Self {
        Dense { kernel, bias }
    }

    /// Loads the layer's kernel and bias in the model dtype.
    pub fn load(l: &Loader, p: &DenseParams) -> Result<Self> {
        Ok(Dense {
            kernel: l.param(&p.kernel())?,
            bias: l.param(&p.bias())?,
        })
    }

    /// Like [`Dense::load`] but always f32 (conditioning path, as in the official dtype flow).
    pub fn load_f32(l: &Loader, p: &DenseParams) -> Result<Self> {
        Ok(Dense {
            kernel: l.param_f32(&p.kernel())?,
            bias: l.param_f32(&p.bias())?,
        })
    }

    /// Applies the layer over the last axis of `x` (any rank ≥ 2), casting `x` to the kernel dtype.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.matmul(x)?.broadcast_add(&self.bias)
    }

    /// `x @ kernel` over the last axis of `x`, without the bias (for callers that fuse the bias into the next
    /// element-wise kernel). The result is a fresh contiguous tensor.
    pub fn matmul(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.to_dtype(self.kernel.dtype())?;
        let dims = x.dims().to_vec();
        let fan_in = dims[dims.len() - 1];
        let rows = x.elem_count() / fan_in.max(1);
        let y = x.reshape((rows, fan_in))?.matmul(&self.kernel)?;
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.kernel.dim(1)?;
        y.reshape(out_dims)
    }

    /// The layers side by side: one `[in, sum(out)]` layer whose outputs are the parts' outputs concatenated in
    /// order. Built with differentiable ops, so gradients still reach the parts' tensors.
    pub fn concat_outputs(parts: &[Dense]) -> candle_core::Result<Dense> {
        let kernels: Vec<&Tensor> = parts.iter().map(|d| &d.kernel).collect();
        let biases: Vec<&Tensor> = parts.iter().map(|d| &d.bias).collect();
        Ok(Dense {
            kernel: Tensor::cat(&kernels, 1)?,
            bias: Tensor::cat(&biases, 0)?,
        })
    }

    /// The layer followed by a multiplication by `factor` (folded into kernel and bias).
    pub fn scaled(&self, factor: f64) -> candle_core::Result<Dense> {
        Ok(Dense {
            kernel: self.kernel.affine(factor, 0.0)?,
            bias: self.bias.affine(factor, 0.0)?,
        })
    }

    pub fn kernel(&self) -> &Tensor {
        &self.kernel
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn fan_out(&self) -> usize {
        self.kernel.dim(1).unwrap_or(0)
    }
}

/// LayerNorm over the last axis without scale and bias, statistics in f32, output in `x`'s dtype.
/// `differentiable` selects the primitive-op path that candle can backpropagate through.
pub fn layer_norm(x: &Tensor, differentiable: bool) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let y = if differentiable {
        let mean = x32.mean_keepdim(D::Minus1)?;
        let xc = x32.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + LN_EPS)?.sqrt()?)?
    } else {
        let h = x32.dim(D::Minus1)?;
        let ones = Tensor::ones(h, DType::F32, x.device())?;
        let zeros = Tensor::zeros(h, DType::F32, x.device())?;
        candle_nn::ops::layer_norm(&x32.contiguous()?, &ones, &zeros, LN_EPS as f32)?
    };
    y.to_dtype(dtype)
}

/// adaLN modulation `x * (1 + scale[:, None]) + shift[:, None]` (un-clipped, as the official model).
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> candle_core::Result<Tensor> {
    let scale = (scale.unsqueeze(1)? + 1.0)?.to_dtype(x.dtype())?;
    let shift = shift.unsqueeze(1)?.to_dtype(x.dtype())?;
    x.broadcast_mul(&scale)?.broadcast_add(&shift)
}

/// Softmax over the last axis in f32 (fast fused kernel, or primitive ops when gradients are needed).
pub fn softmax_f32(x: &Tensor, differentiable: bool) -> candle_core::Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    if differentiable {
        candle_nn::ops::softmax(&x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}
