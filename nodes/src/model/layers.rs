//! Small building blocks shared by the DiT modules: Flax-layout dense layers, affine-free LayerNorm, modulation,
//! and the CPU matmul and add they use.

use candle_core::{DType, Storage, Tensor, D};

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
        add(&self.matmul(x)?, &self.bias)
    }

    /// `x @ kernel` over the last axis of `x`, without the bias (for callers that fuse the bias into the next
    /// element-wise kernel). The result is a fresh contiguous tensor.
    pub fn matmul(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.to_dtype(self.kernel.dtype())?;
        let dims = x.dims().to_vec();
        let fan_in = dims[dims.len() - 1];
        let rows = x.elem_count() / fan_in.max(1);
        let y = matmul(&x.reshape((rows, fan_in))?, &self.kernel)?;
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

/// `a @ b` with the semantics of candle's [`Tensor::matmul`] (rank ≥ 2, equal batch dimensions). For f32 CPU
/// tensors that carry no gradient it calls the `gemm` crate itself, with the arguments candle passes it (the same
/// bits), and otherwise it is candle's matmul.
///
/// Why not candle's: its CPU matmul asks `candle_core::utils::get_num_threads()` for a thread count on every call,
/// which (unless `RAYON_NUM_THREADS` is set) calls `num_cpus::get_physical()`, and that reads and parses
/// `/proc/cpuinfo` each time: about 5.5 reads per forward of the default model (its `Dense` layers), ~6 % of its
/// CPU time on a 2-vCPU VM (docs/benchmarks.md, 2026-12-02 fifth session).
pub fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match cpu_matmul(a, b) {
        Some(out) => Ok(out),
        None => a.matmul(b),
    }
}

/// Whether both tensors are f32 on the CPU and carry no gradient tracking (what [`matmul`] and [`add`] compute
/// themselves).
fn plain_cpu_f32(a: &Tensor, b: &Tensor) -> bool {
    [a, b]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// [`matmul`] through the `gemm` crate where it applies: both tensors f32 on the CPU, without gradient
/// tracking, with shapes candle would accept and each operand's batch dimensions collapsing into one stride.
/// `None` leaves the product (and every error message) to candle.
fn cpu_matmul(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    if !plain_cpu_f32(a, b) {
        return None;
    }
    let (ad, bd) = (a.dims(), b.dims());
    let r = ad.len();
    if r < 2 || bd.len() != r || ad[..r - 2] != bd[..r - 2] || ad[r - 1] != bd[r - 2] {
        return None;
    }
    let (m, k, n) = (ad[r - 2], ad[r - 1], bd[r - 1]);
    let batch: usize = ad[..r - 2].iter().product();
    if m == 0 || n == 0 || k == 0 || batch == 0 {
        return None;
    }
    let mut out = vec![0f32; batch * m * n];
    {
        let (ga, la) = a.storage_and_layout();
        let (gb, lb) = b.storage_and_layout();
        let (Storage::Cpu(sa), Storage::Cpu(sb)) = (&*ga, &*gb) else {
            return None;
        };
        let (da, db) = (sa.as_slice::<f32>().ok()?, sb.as_slice::<f32>().ok()?);
        let oa = operand(da.len(), la.start_offset(), la.stride(), ad)?;
        let ob = operand(db.len(), lb.start_offset(), lb.stride(), bd)?;
        let threads = rayon::current_num_threads();
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        for (i, dst) in out.chunks_exact_mut(m * n).enumerate() {
            // SAFETY: `operand` checked that every element the strides address, in every batch, lies inside its
            // buffer; `dst` is `m * n` row-major.
            unsafe {
                super::packed::gemm_rows(
                    (m, n, k),
                    dst.as_mut_ptr(),
                    n,
                    (da.as_ptr().add(oa.0 + i * oa.1), oa.3, oa.2),
                    (db.as_ptr().add(ob.0 + i * ob.1), ob.3, ob.2),
                    par,
                );
            }
        }
    }
    let mut dims = ad.to_vec();
    dims[r - 1] = n;
    Tensor::from_vec(out, dims, a.device()).ok()
}

/// `(offset, batch stride, row stride, column stride)` of a matmul operand of `dims` laid out with `stride` from
/// `start` in a buffer of `len` elements, when its batch dimensions collapse into one stride and every element
/// lies inside the buffer.
fn operand(
    len: usize,
    start: usize,
    stride: &[usize],
    dims: &[usize],
) -> Option<(usize, usize, isize, isize)> {
    let r = dims.len();
    // The batch dimensions that matter (size > 1) must nest: each one's stride is the next one's times its size.
    let outer: Vec<(usize, usize)> = dims[..r - 2]
        .iter()
        .zip(&stride[..r - 2])
        .filter(|(&d, _)| d > 1)
        .map(|(&d, &s)| (d, s))
        .collect();
    for w in outer.windows(2) {
        if w[0].1 != w[1].1 * w[1].0 {
            return None;
        }
    }
    let skip = outer.last().map_or(0, |&(_, s)| s);
    let batch: usize = dims[..r - 2].iter().product();
    let last = start
        + (batch - 1) * skip
        + (dims[r - 2] - 1) * stride[r - 2]
        + (dims[r - 1] - 1) * stride[r - 1];
    (last < len).then_some((
        start,
        skip,
        isize::try_from(stride[r - 2]).ok()?,
        isize::try_from(stride[r - 1]).ok()?,
    ))
}

/// `a + b` with `b` broadcast over `a`'s leading dimensions (candle's [`Tensor::broadcast_add`]). For f32 CPU
/// tensors without gradient tracking, contiguous, whose `b` is `a`'s trailing dimensions (a bias, the position
/// embedding, an equal-shaped stream), the sum is computed here, split across the rayon pool when large (the same
/// bits: one IEEE addition per element); otherwise it is candle's.
///
/// Why not candle's: from 64K elements its CPU element-wise ops run on candle's own thread pool, whose workers then
/// busy-wait 25 000 spin iterations before they park; on a 2-core machine that spinning thread competes with the
/// rayon workers of the next product (7 such adds per DiT-B forward at batch 1; docs/benchmarks.md, 2026-12-02
/// fifth session).
pub fn add(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match cpu_add(a, b) {
        Some(out) => Ok(out),
        None => a.broadcast_add(b),
    }
}

/// Elements per task of [`add`] on the rayon pool (and the least count that is split at all).
const ADD_CHUNK: usize = 16 * 1024;

fn cpu_add(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    if !plain_cpu_f32(a, b) {
        return None;
    }
    // `b`'s dimensions without leading ones must be `a`'s trailing ones.
    let bd: &[usize] = {
        let d = b.dims();
        &d[d.iter().take_while(|&&x| x == 1).count()..]
    };
    let ad = a.dims();
    if bd.len() > ad.len() || ad[ad.len() - bd.len()..] != *bd || b.elem_count() == 0 {
        return None;
    }
    let (ga, la) = a.storage_and_layout();
    let (gb, lb) = b.storage_and_layout();
    let (Storage::Cpu(sa), Storage::Cpu(sb)) = (&*ga, &*gb) else {
        return None;
    };
    let (ra, rb) = (la.contiguous_offsets()?, lb.contiguous_offsets()?);
    let xa = sa.as_slice::<f32>().ok()?.get(ra.0..ra.1)?;
    let xb = sb.as_slice::<f32>().ok()?.get(rb.0..rb.1)?;
    let nb = xb.len();
    let mut out = vec![0f32; xa.len()];
    // Tasks of whole rows of `b`, so each task adds `b` from its start.
    let chunk = ADD_CHUNK.div_ceil(nb) * nb;
    let sum = |start: usize, dst: &mut [f32]| {
        for (d, x) in dst.chunks_mut(nb).zip(xa[start..].chunks(nb)) {
            for ((o, &x), &y) in d.iter_mut().zip(x).zip(xb) {
                *o = x + y;
            }
        }
    };
    if out.len() >= 4 * chunk {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, dst)| sum(c * chunk, dst));
    } else {
        sum(0, &mut out);
    }
    drop((ga, gb));
    Tensor::from_vec(out, ad, a.device()).ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    fn randn(dims: &[usize], seed: u64) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n as u64)
            .map(|i| (((i * 2654435761 + seed * 40503) % 2001) as f32 - 1000.0) / 537.0)
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    #[test]
    fn cpu_matmul_gives_candles_bits_on_every_layout() {
        let q = randn(&[2, 3, 17, 8], 1);
        let k = randn(&[2, 3, 17, 8], 2);
        let cases: Vec<(Tensor, Tensor)> = vec![
            // An embedding MLP at batch 1, a block product, odd sizes.
            (randn(&[1, 256], 3), randn(&[256, 96], 4)),
            (randn(&[49, 96], 5), randn(&[96, 288], 6)),
            (randn(&[5, 7], 7), randn(&[7, 3], 8)),
            // Attention: a transposed (non-contiguous) right operand, then a batched product.
            (q.clone(), k.t().unwrap()),
            (randn(&[2, 3, 17, 17], 9), k.clone()),
            // A transposed left operand, a narrowed one (offset and row stride), a broadcast batch.
            (randn(&[9, 6], 10).t().unwrap(), randn(&[9, 4], 11)),
            (
                randn(&[10, 12], 12).narrow(1, 2, 5).unwrap(),
                randn(&[5, 6], 13),
            ),
            (
                randn(&[4, 5, 6], 14),
                randn(&[6, 3], 15).broadcast_as((4, 6, 3)).unwrap(),
            ),
        ];
        for (i, (a, b)) in cases.iter().enumerate() {
            assert!(cpu_matmul(a, b).is_some(), "case {i} took candle's path");
            let ours = matmul(a, b).unwrap();
            let theirs = a.matmul(b).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "case {i}");
            assert_eq!(bits(&ours), bits(&theirs), "case {i}");
        }
    }

    #[test]
    fn cpu_add_gives_candles_bits_and_leaves_the_rest_to_candle() {
        let big = randn(&[2, 256, 768], 1);
        let cases: Vec<(Tensor, Tensor)> = vec![
            // The ODE_l stream update (large: split across the pool), the position embedding, a bias.
            (big.clone(), randn(&[2, 256, 768], 2)),
            (big.clone(), randn(&[1, 256, 768], 3)),
            (big.clone(), randn(&[768], 4)),
            (randn(&[3, 5], 5), randn(&[5], 6)),
            (randn(&[7, 1000, 3], 7), randn(&[1000, 3], 8)),
        ];
        for (i, (a, b)) in cases.iter().enumerate() {
            assert!(cpu_add(a, b).is_some(), "case {i} took candle's path");
            let ours = add(a, b).unwrap();
            assert_eq!(ours.dims(), a.dims(), "case {i}");
            assert_eq!(bits(&ours), bits(&a.broadcast_add(b).unwrap()), "case {i}");
        }
        // Candle's: broadcasting a middle dimension, a non-contiguous operand, a gradient, a mismatch.
        let (a, b) = (randn(&[2, 3, 4], 1), randn(&[2, 1, 4], 2));
        assert!(cpu_add(&a, &b).is_none());
        assert_eq!(
            bits(&add(&a, &b).unwrap()),
            bits(&a.broadcast_add(&b).unwrap())
        );
        let t = randn(&[4, 3], 3).t().unwrap();
        assert!(cpu_add(&t, &randn(&[4], 4)).is_none());
        let w = Var::from_tensor(&randn(&[3], 5)).unwrap();
        assert!(cpu_add(&a, w.as_tensor()).is_none());
        assert!(add(&a, &randn(&[5], 6)).is_err());
    }

    #[test]
    fn cpu_matmul_leaves_gradients_other_dtypes_and_errors_to_candle() {
        let w = Var::from_tensor(&randn(&[4, 3], 1)).unwrap();
        let x = randn(&[2, 4], 2);
        assert!(cpu_matmul(&x, w.as_tensor()).is_none());
        let y = matmul(&x, w.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(w.as_tensor()).unwrap().dims(), [4, 3]);
        let h = x.to_dtype(DType::F64).unwrap();
        assert!(cpu_matmul(&h, &randn(&[4, 3], 3).to_dtype(DType::F64).unwrap()).is_none());
        // A shape mismatch is candle's error.
        let e = matmul(&x, &randn(&[5, 3], 4)).unwrap_err().to_string();
        assert!(e.contains("matmul"), "{e}");
    }
}
