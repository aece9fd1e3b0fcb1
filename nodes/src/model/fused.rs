//! CPU fast path of the inference forward (f32, no gradients): fused element-wise kernels.
//!
//! candle runs each element-wise op as its own pass over memory with a freshly allocated output, and its tanh-GELU
//! goes through libm `tanhf`. In a DiT block that non-matmul work (bias adds, LayerNorm, adaLN modulation, GELU,
//! gated residuals, head reshapes) was about a third of the CPU forward. Here it is fused into a few row-parallel
//! passes, most of them in place on a fresh matmul output:
//!
//! - [`ln_modulate_row`]: `LayerNorm(x) * (1 + scale[b]) + shift[b]` for one row, applied by [`super::packed`] as
//!   it packs a product's input (so the normalised activations are never written out);
//! - [`attention`]: multi-head attention on the fused `[q | k | v]` projection, one task per (sample, head):
//!   `q kᵀ`, the softmax in place with the polynomial `exp`, and `· v` written into the head's output columns.
//!
//! The bias adds, GELU and gated residuals run inside the products of [`super::packed`] (its AVX-512 tiles, with
//! the same formulas as [`gelu_tanh`] here), or as its separate pass on the portable path.
//!
//! Each kernel evaluates the formula of the generic op chain in the same order (so results agree to rounding), except
//! GELU, which uses the identity `0.5 x (1 + tanh u) = x / (1 + exp(-2u))` with a polynomial `exp` (relative error
//! ~1e-7, vectorisable) instead of `tanhf`.
//!
//! [`super::fused_block`] computes the block and the final layer with them when [`cpu_format`] says so (CPU inference in
//! f32, or bf16 on AVX-512 CPUs); CUDA, fp16, other bf16 and training use the reference ops of [`super::block`].

use candle_core::backend::BackendStorage;
#[cfg(test)]
use candle_core::Tensor;
use candle_core::{bail, CpuStorage, DType, Device, Layout, Storage, StorageRef};
use std::cell::RefCell;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::aligned::Aligned;
use super::avx512;
use super::layers::LN_EPS;
use super::packed::{gemm_rows, Bf16Products, CpuKernels, WeightFormat};

/// How the fused CPU path stores a model's block weights for this device, dtype and mode, if it applies: f32
/// models as f32, bf16 models as bf16 where the CPU multiplies bf16 (AVX-512: see `Bf16Products`); inference only.
/// Elsewhere (GPUs, fp16, bf16 without AVX-512, training) the reference ops run.
pub fn cpu_format(device: &Device, dtype: DType, differentiable: bool) -> Option<WeightFormat> {
    if differentiable || !device.is_cpu() {
        return None;
    }
    match dtype {
        DType::F32 => Some(WeightFormat::F32),
        DType::BF16 if CpuKernels::detect().has_bf16() => Some(WeightFormat::Bf16),
        _ => None,
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Access helpers

/// The f32 data of a CPU storage.
fn f32_data<'a>(s: &'a CpuStorage, what: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v.as_slice()),
        other => bail!("{what}: expected f32 data, found {:?}", other.dtype()),
    }
}

fn f32_guard<'a>(g: &'a StorageRef<'_>, what: &str) -> candle_core::Result<&'a [f32]> {
    match &**g {
        Storage::Cpu(s) => f32_data(s, what),
        _ => bail!("{what}: the fused kernels run on the CPU only"),
    }
}

/// The contiguous elements of a tensor laid out by `l`.
/// The f32 data of a contiguous CPU tensor's storage (from `Tensor::storage_and_layout`).
pub(super) fn f32_slice<'a>(
    g: &'a StorageRef<'_>,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    contiguous(f32_guard(g, what)?, l, what)
}

fn contiguous<'a>(data: &'a [f32], l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: expected a contiguous tensor"),
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Scalar math

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `exp(z)` for f32 with ~1e-7 relative error, branch-free so loops over it vectorise.
#[inline(always)]
fn exp_f32(z: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round-to-nearest through the float mantissa (1.5 * 2^23).
    const ROUND: f32 = 12_582_912.0;
    let z = z.clamp(-87.0, 88.0);
    let t = z * LOG2E + ROUND;
    let n = t - ROUND;
    // Cody-Waite reduction: z = n ln2 + r, |r| <= ln2/2.
    let r = z - n * LN2_HI - n * LN2_LO;
    // Taylor series to r^7: truncation error < 6e-9 relative on |r| <= 0.347.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n: the integer n sits in the low mantissa bits of `t`; integer ops only (no float->int conversion), so the
    // loop vectorises. n is in [-126, 127] after the clamp; a NaN input stays NaN through `p`.
    let bits = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// tanh-approximate GELU (jax `gelu(approximate=True)`): `0.5 x (1 + tanh u)` written as `x / (1 + exp(-2u))`,
/// `u = sqrt(2/pi) (x + 0.044715 x^3)`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x);
    x / (1.0 + exp_f32(-2.0 * u))
}

/// Partial accumulators of the vectorisable reductions: one AVX-512 vector (two AVX2 ones).
const LANES: usize = 16;

/// Sum and sum of squares with [`LANES`] partial accumulators (vectorisable, and more accurate than one running
/// sum).
#[inline(always)]
fn sums(x: &[f32]) -> (f32, f32) {
    let mut s = [0f32; LANES];
    let mut s2 = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            s[j] += c[j];
            s2[j] += c[j] * c[j];
        }
    }
    let mut a: f32 = s.iter().sum();
    let mut b: f32 = s2.iter().sum();
    for v in rem {
        a += v;
        b += v * v;
    }
    (a, b)
}

/// Maximum with [`LANES`] partial maxima (vectorisable). NaNs are ignored, as by `f32::max`.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            m[j] = if c[j] > m[j] { c[j] } else { m[j] };
        }
    }
    rem.iter()
        .chain(m.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `x <- exp(x - max(x))` in place; returns the sum of the new values ([`LANES`] partial sums, as [`sums`]).
fn exp_shifted_(x: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { exp_shifted_avx512(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { exp_shifted_avx2(x) };
    }
    exp_shifted_body(x)
}

/// [`exp_shifted_`]'s portable arithmetic compiled for AVX2 (256-bit vectors instead of the baseline's 128; same
/// results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_shifted_avx2(x: &mut [f32]) -> f32 {
    exp_shifted_body(x)
}

/// [`exp_shifted_`] with AVX-512 (16 lanes instead of the baseline's 4, fused multiply-adds in the polynomial:
/// about one ulp from the portable path).
#[cfg(target_arch = "x86_64")]
unsafe fn exp_shifted_avx512(x: &mut [f32]) -> f32 {
    avx512::exp_shifted(x.as_mut_ptr(), x.len())
}

#[inline(always)]
fn exp_shifted_body(x: &mut [f32]) -> f32 {
    let max = lane_max(x);
    let mut s = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            c[j] = exp_f32(c[j] - max);
            s[j] += c[j];
        }
    }
    let mut a: f32 = s.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_f32(*v - max);
        a += *v;
    }
    a
}

// ----------------------------------------------------------------------------------------------------------------
// LayerNorm + modulation

/// One row of adaLN's `dst = LayerNorm(src) * (1 + scale) + shift` (no affine, eps 1e-6, f32 statistics with the
/// clamped fast variance `E[x²] - E[x]²` as flax): the prologue of the packed products, [`super::packed::LnRows`].
pub(super) fn ln_modulate_row(src: &[f32], shift: &[f32], scale: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { ln_modulate_row_avx512(src, shift, scale, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { ln_modulate_row_avx2(src, shift, scale, dst) };
    }
    ln_modulate_row_body(src, shift, scale, dst)
}

/// [`ln_modulate_row`] compiled for AVX2 (same arithmetic, same order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ln_modulate_row_avx2(src: &[f32], shift: &[f32], scale: &[f32], dst: &mut [f32]) {
    ln_modulate_row_body(src, shift, scale, dst)
}

/// [`ln_modulate_row`] compiled for AVX-512 (same arithmetic, same order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn ln_modulate_row_avx512(src: &[f32], shift: &[f32], scale: &[f32], dst: &mut [f32]) {
    ln_modulate_row_body(src, shift, scale, dst)
}

#[inline(always)]
fn ln_modulate_row_body(src: &[f32], shift: &[f32], scale: &[f32], dst: &mut [f32]) {
    let inv_n = 1.0 / src.len().max(1) as f32;
    let (s, s2) = sums(src);
    let mean = s * inv_n;
    let var = (s2 * inv_n - mean * mean).max(0.0);
    let inv_std = (var + LN_EPS as f32).sqrt().recip();
    for (((d, &v), &c), &h) in dst.iter_mut().zip(src).zip(scale).zip(shift) {
        *d = (v - mean) * inv_std * (1.0 + c) + h;
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Attention

/// A pointer that rayon tasks may share; every task writes a disjoint set of elements through it.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the `Sync` wrapper rather than its field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Multi-head attention on the f32 data of the fused projection output `qkv` `[b, t, 3H]` (`[q | k | v]`, bias
/// added, the query scale already folded in), into `out` `[b, t, H]` with head-major features (its capacity
/// reused). One task per (sample, head), spread over the rayon pool: `S = q kᵀ` into a per-task `[t, t]` buffer,
/// softmax over its rows in place, then `S v` written straight into the head's columns of the output. Each task
/// runs single-threaded products on strided views of `qkv`, so nothing is copied, no `[heads, t, t]` tensor is
/// materialised, and at batch 1 the heads (not the small products) keep all cores busy.
pub fn attention_into(
    qkv: &[f32],
    (b, t, three_h): (usize, usize, usize),
    num_heads: usize,
    bf16: bool,
    out: &mut Vec<f32>,
) -> candle_core::Result<()> {
    attention_rows(qkv, (b, t, three_h), num_heads, products_for(bf16), out)
}

/// The products for this CPU: bf16 tiles for the bf16 model where its layers use `vdpbf16ps` ([`Bf16Products`]),
/// f32 tiles elsewhere on AVX-512 (the bf16 model's layers then widen their weights and keep f32 activations).
fn products_for(bf16: bool) -> Products {
    match CpuKernels::detect() {
        CpuKernels::Avx512 { bf16: true }
            if bf16 && Bf16Products::detect() == Bf16Products::Dot =>
        {
            Products::Avx512Bf16
        }
        CpuKernels::Avx512 { .. } => Products::Avx512,
        CpuKernels::Avx2 | CpuKernels::Portable | CpuKernels::Blas => Products::Gemm,
    }
}

/// How the two attention products are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Products {
    /// The `gemm` crate (portable).
    Gemm,
    /// AVX-512 f32 tiles.
    Avx512,
    /// AVX512-BF16 tiles: q, k, the softmax numerators and v rounded to bf16, f32 accumulation (the bf16 model).
    Avx512Bf16,
}

/// Per-task buffers of [`attention_with`].
struct Scratch {
    /// Scores `[t, t]`, then the softmax numerators. These three buffers start on a cache line
    /// ([`super::aligned`]): the tiles load and store them in whole lines.
    s: Aligned<f32>,
    /// `kᵀ` in blocks of 64 keys, `[ceil(t/64), hd, 64]` (f32 tiles): each block's 16 KB (at head width 64) on
    /// consecutive lines, so it stays in L1 while every row tile of q passes over it (rows `t` floats apart
    /// alias to a quarter of L1's sets at t = 256).
    kt: Aligned<f32>,
    /// This head's v rows, contiguous `[t, hd]` (f32 tiles): in place they are `3H` floats apart (9 KB at
    /// DiT-B), which maps them onto a quarter of L1's sets.
    v: Aligned<f32>,
    /// 1 / row sum of the numerators.
    inv: Vec<f32>,
    /// The bf16 operands (bf16 tiles).
    bf: Bf16Operands,
}

/// The bf16 tiles' operands, each starting on a cache line like the f32 ones (the tiles load them in whole lines).
struct Bf16Operands {
    /// q rows `[t, 2 ceil(hd/2)]`.
    q: Aligned<u16>,
    /// `kᵀ` as pairs in blocks of 64 keys, `[ceil(t/64), ceil(hd/2), 64]` (see [`Scratch::kt`]: in one
    /// `[ceil(hd/2), t]` matrix a block's rows lie 1 KB apart at t = 256 and share a quarter of L1's sets).
    kt: Aligned<u32>,
    /// Numerator rows `[t, 2 ceil(t/2)]`.
    p: Aligned<u16>,
    /// v as row pairs: `[ceil(t/2), hd]`.
    v: Aligned<u32>,
    /// Two converted rows.
    rows: Vec<u16>,
}

impl Default for Bf16Operands {
    fn default() -> Self {
        Bf16Operands {
            q: Aligned::zeroed(0),
            kt: Aligned::zeroed(0),
            p: Aligned::zeroed(0),
            v: Aligned::zeroed(0),
            rows: Vec::new(),
        }
    }
}

/// The shape a [`Scratch`] was made for: tokens, head width, products.
type ScratchShape = (usize, usize, Products);

thread_local! {
    /// Each pool thread's [`Scratch`], kept between calls (a fresh `[t, t]` buffer per task was a 256 KB memset
    /// per head at 256 tokens), with the shape it was made for.
    static SCRATCH: RefCell<Option<(ScratchShape, Scratch)>> = const { RefCell::new(None) };
}

impl Scratch {
    /// Zeroed buffers for `t` tokens of head width `hd` (the bf16 operands' odd pads rely on the zeros).
    fn new(t: usize, hd: usize, products: Products) -> Self {
        let (hp, tp) = (hd.div_ceil(2), t.div_ceil(2));
        let bf = if products == Products::Avx512Bf16 {
            Bf16Operands {
                q: Aligned::zeroed(t * 2 * hp),
                kt: Aligned::zeroed(t.div_ceil(64) * 64 * hp),
                p: Aligned::zeroed(t * 2 * tp),
                v: Aligned::zeroed(tp * hd),
                rows: vec![0; 2 * hd],
            }
        } else {
            Bf16Operands::default()
        };
        let f32_tiles = products == Products::Avx512;
        let kt = Aligned::zeroed(if f32_tiles {
            t.div_ceil(64) * 64 * hd
        } else {
            0
        });
        let v = Aligned::zeroed(if f32_tiles { t * hd } else { 0 });
        Scratch {
            s: Aligned::zeroed(t * t),
            kt,
            v,
            inv: vec![0f32; t],
            bf,
        }
    }

    /// Runs `f` with this thread's scratch for the shape, made anew when the shape changed (so pads written for
    /// another shape never show through).
    fn with<R>(t: usize, hd: usize, products: Products, f: impl FnOnce(&mut Scratch) -> R) -> R {
        SCRATCH.with(|cell| {
            let mut slot = cell.borrow_mut();
            let key = (t, hd, products);
            if slot.as_ref().map(|(k, _)| *k) != Some(key) {
                *slot = Some((key, Scratch::new(t, hd, products)));
            }
            let (_, sc) = slot.as_mut().expect("just filled");
            f(sc)
        })
    }
}

/// [`attention_into`] on a tensor with the given products (the tests' entry).
#[cfg(test)]
fn attention_with(
    qkv: &Tensor,
    num_heads: usize,
    products: Products,
) -> candle_core::Result<Tensor> {
    let what = "odelt-attention";
    let (b, t, three_h) = qkv.dims3()?;
    let (guard, layout) = qkv.storage_and_layout();
    let src = contiguous(f32_guard(&guard, what)?, layout, what)?;
    let mut out = Vec::new();
    attention_rows(src, (b, t, three_h), num_heads, products, &mut out)?;
    drop(guard);
    Tensor::from_vec(out, (b, t, three_h / 3), qkv.device())
}

/// [`attention_into`] with the given products. Every element of `out` is written (by the head owning its
/// columns), so a reused buffer is not cleared first.
fn attention_rows(
    src: &[f32],
    (b, t, three_h): (usize, usize, usize),
    num_heads: usize,
    products: Products,
    out: &mut Vec<f32>,
) -> candle_core::Result<()> {
    let what = "odelt-attention";
    if num_heads == 0 || three_h % (3 * num_heads) != 0 {
        bail!("{what}: width {three_h} is not 3 x {num_heads} heads");
    }
    if src.len() != b * t * three_h {
        bail!(
            "{what}: {} values for a [{b}, {t}, {three_h}] projection",
            src.len()
        );
    }
    let h = three_h / 3;
    let hd = h / num_heads;
    out.resize(b * t * h, 0.0);
    let dst = SharedMut(out.as_mut_ptr());
    (0..b * num_heads).into_par_iter().for_each(|task| {
        Scratch::with(t, hd, products, |sc| {
            let (bi, head) = (task / num_heads, task % num_heads);
            let base = bi * t * three_h + head * hd;
            let (q, k, v) = (&src[base..], &src[base + h..], &src[base + 2 * h..]);
            let rs = three_h;
            // SAFETY (both products): every index touched lies inside `src` / the scratch / `out` (rows `< t` of
            // stride `3H` from `base + 2H + hd <= bi*T*3H + 3H`, columns `< hd`), and tasks write disjoint column
            // blocks `[head*hd, (head+1)*hd)` of sample `bi`'s rows of `out`.
            let y = unsafe { dst.ptr().add(bi * t * h + head * hd) };
            match products {
                Products::Gemm => unsafe { gemm_scores(q, k, rs, t, hd, &mut sc.s) },
                #[cfg(target_arch = "x86_64")]
                Products::Avx512 => unsafe {
                    avx512_scores(q, k, rs, t, hd, &mut sc.s, &mut sc.kt)
                },
                #[cfg(target_arch = "x86_64")]
                Products::Avx512Bf16 => unsafe {
                    bf16_scores(q, k, rs, t, hd, &mut sc.s, &mut sc.bf)
                },
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("AVX-512 products are only chosen on x86_64"),
            }
            // Softmax numerators in place; the normalisation scales the (narrower) output rows instead.
            for (row, inv) in sc.s.chunks_exact_mut(t).zip(sc.inv.iter_mut()) {
                *inv = exp_shifted_(row).recip();
            }
            match products {
                Products::Gemm => unsafe { gemm_weighted(&sc.s, v, rs, t, hd, y, h) },
                #[cfg(target_arch = "x86_64")]
                Products::Avx512 => unsafe {
                    avx512_weighted(&sc.s, v, rs, t, hd, y, h, &mut sc.v)
                },
                #[cfg(target_arch = "x86_64")]
                Products::Avx512Bf16 => unsafe {
                    bf16_weighted(&sc.s, v, rs, t, hd, y, h, &mut sc.bf)
                },
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("AVX-512 products are only chosen on x86_64"),
            }
            for (i, &f) in sc.inv.iter().enumerate() {
                // SAFETY: row i's `hd` columns of this head (see above).
                let row = unsafe { std::slice::from_raw_parts_mut(y.add(i * h), hd) };
                row.iter_mut().for_each(|x| *x *= f);
            }
        })
    });
    Ok(())
}

// The attention products of one (sample, head): `S = q kᵀ` (`[t, t]`, row stride `t`) and `Y = S v` written into the
// head's columns of the output (row stride `h`); `q`, `k`, `v` are rows of stride `rs` (the fused projection).

/// `S = q kᵀ` with the `gemm` crate (single-threaded: the heads are the parallel tasks).
unsafe fn gemm_scores(q: &[f32], k: &[f32], rs: usize, t: usize, hd: usize, s: &mut [f32]) {
    // S[i, j] = sum_c q[i, c] k[j, c]: rhs element (c, j) is k[j, c].
    let rs = rs as isize;
    gemm_rows(
        (t, t, hd),
        s.as_mut_ptr(),
        t,
        (q.as_ptr(), 1, rs),
        (k.as_ptr(), rs, 1),
        gemm::Parallelism::None,
    );
}

/// `Y = S v` with the `gemm` crate.
unsafe fn gemm_weighted(
    s: &[f32],
    v: &[f32],
    rs: usize,
    t: usize,
    hd: usize,
    y: *mut f32,
    h: usize,
) {
    gemm_rows(
        (t, hd, t),
        y,
        h,
        (s.as_ptr(), 1, t as isize),
        (v.as_ptr(), 1, rs as isize),
        gemm::Parallelism::None,
    );
}

/// Calls `f(r0, rows, c0, cols)` for the `RB x NB` tiles of a `[t, width]` attention product, column blocks
/// outermost (each block of `kᵀ` or `v` stays in L1 while the rows pass).
#[cfg(target_arch = "x86_64")]
fn tiles_6x64(t: usize, width: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    for c0 in (0..width).step_by(avx512::NB) {
        let cols = (width - c0).min(avx512::NB);
        for r0 in (0..t).step_by(avx512::RB) {
            f(r0, (t - r0).min(avx512::RB), c0, cols);
        }
    }
}

/// `S = q kᵀ` with the AVX-512 tiles: `kᵀ` transposed once into `kt` (blocks of 64 keys, see [`Scratch::kt`]),
/// then `6 x 64` tiles of `S`.
#[cfg(target_arch = "x86_64")]
unsafe fn avx512_scores(
    q: &[f32],
    k: &[f32],
    rs: usize,
    t: usize,
    hd: usize,
    s: &mut [f32],
    kt: &mut [f32],
) {
    // Key j, feature c of kᵀ.
    let at = |j: usize, c: usize| (j / 64) * hd * 64 + c * 64 + j % 64;
    // 8 keys x 16 features at a time through the register transpose (8 keys never straddle a block); the ragged
    // edges one value at a time.
    let (jf, cf) = (t / 8 * 8, hd / 16 * 16);
    for j0 in (0..jf).step_by(8) {
        for c0 in (0..cf).step_by(16) {
            let rows = std::array::from_fn(|r| k.as_ptr().add((j0 + r) * rs + c0));
            avx512::transpose_8x16_to(rows, kt.as_mut_ptr().add(at(j0, c0)), 64);
        }
    }
    for j in 0..t {
        let cs = if j < jf { cf } else { 0 };
        for c in cs..hd {
            kt[at(j, c)] = k[j * rs + c];
        }
    }
    tiles_6x64(t, t, |r0, rows, j0, cols| {
        avx512::by_rows!(
            rows,
            rows_x64,
            hd,
            q.as_ptr().add(r0 * rs),
            rs,
            kt.as_ptr().add(at(j0, 0)),
            64,
            s.as_mut_ptr().add(r0 * t + j0),
            t,
            cols
        );
    });
}

/// `Y = S v` with the AVX-512 tiles, `v` first copied to contiguous rows (`vc`, see [`Scratch::v`]).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_weighted(
    s: &[f32],
    v: &[f32],
    rs: usize,
    t: usize,
    hd: usize,
    y: *mut f32,
    h: usize,
    vc: &mut [f32],
) {
    for (j, row) in vc.chunks_exact_mut(hd).enumerate().take(t) {
        row.copy_from_slice(&v[j * rs..][..hd]);
    }
    tiles_6x64(t, hd, |r0, rows, c0, cols| {
        avx512::by_rows!(
            rows,
            rows_x64,
            t,
            s.as_ptr().add(r0 * t),
            t,
            vc.as_ptr().add(c0),
            hd,
            y.add(r0 * h + c0),
            h,
            cols
        );
    });
}

/// Two bf16 values as the `u32` lane `vdpbf16ps` multiplies: `lo` in the low half.
#[inline]
fn pair(lo: u16, hi: u16) -> u32 {
    u32::from(lo) | (u32::from(hi) << 16)
}

/// `S = q kᵀ` with the bf16 tiles: q rows and `kᵀ` pairs rounded to bf16 (odd pads stay 0 from the allocation).
#[cfg(target_arch = "x86_64")]
unsafe fn bf16_scores(
    q: &[f32],
    k: &[f32],
    rs: usize,
    t: usize,
    hd: usize,
    s: &mut [f32],
    bf: &mut Bf16Operands,
) {
    let hp = hd.div_ceil(2);
    for i in 0..t {
        avx512::to_bf16(
            q.as_ptr().add(i * rs),
            bf.q.as_mut_ptr().add(i * 2 * hp),
            hd,
        );
    }
    // Key j, feature pair p of the blocked kᵀ.
    let at = |j: usize, p: usize| (j / 64) * hp * 64 + p * 64 + j % 64;
    for j in 0..t {
        avx512::to_bf16(k.as_ptr().add(j * rs), bf.rows.as_mut_ptr(), hd);
        for p in 0..hp {
            let hi = if 2 * p + 1 < hd {
                bf.rows[2 * p + 1]
            } else {
                0
            };
            bf.kt[at(j, p)] = pair(bf.rows[2 * p], hi);
        }
    }
    tiles_6x64(t, t, |r0, rows, j0, cols| {
        avx512::by_rows!(
            rows,
            rows_x64_bf16,
            hp,
            bf.q.as_ptr().add(r0 * 2 * hp),
            2 * hp,
            bf.kt.as_ptr().add(at(j0, 0)),
            64,
            s.as_mut_ptr().add(r0 * t + j0),
            t,
            cols
        );
    });
}

/// `Y = S v` with the bf16 tiles: the numerators and v's row pairs rounded to bf16.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn bf16_weighted(
    s: &[f32],
    v: &[f32],
    rs: usize,
    t: usize,
    hd: usize,
    y: *mut f32,
    h: usize,
    bf: &mut Bf16Operands,
) {
    let tp = t.div_ceil(2);
    for i in 0..t {
        avx512::to_bf16(s.as_ptr().add(i * t), bf.p.as_mut_ptr().add(i * 2 * tp), t);
    }
    for p in 0..tp {
        avx512::to_bf16(v.as_ptr().add(2 * p * rs), bf.rows.as_mut_ptr(), hd);
        if 2 * p + 1 < t {
            avx512::to_bf16(
                v.as_ptr().add((2 * p + 1) * rs),
                bf.rows.as_mut_ptr().add(hd),
                hd,
            );
        } else {
            bf.rows[hd..].fill(0);
        }
        for c in 0..hd {
            bf.v[p * hd + c] = pair(bf.rows[c], bf.rows[hd + c]);
        }
    }
    tiles_6x64(t, hd, |r0, rows, c0, cols| {
        avx512::by_rows!(
            rows,
            rows_x64_bf16,
            tp,
            bf.p.as_ptr().add(r0 * 2 * tp),
            2 * tp,
            bf.v.as_ptr().add(c0),
            hd,
            y.add(r0 * h + c0),
            h,
            cols
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::{Device, D};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f32;
        for i in -8690..=8790 {
            let z = i as f32 * 0.01 + 0.003;
            let rel = ((exp_f32(z) - z.exp()) / z.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn gelu_matches_tanh_form() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let want = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh());
            let got = gelu_tanh(x);
            assert!(
                (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "x={x}: {got} vs {want}"
            );
        }
        assert!(gelu_tanh(-200.0).abs() < 1e-30);
        assert_eq!(gelu_tanh(200.0), 200.0);
        assert!(gelu_tanh(f32::NAN).is_nan());
    }

    #[test]
    fn ln_modulate_row_matches_candle_chain() {
        let (t, h) = (5, 40);
        let x = rand(&[t, h], 1);
        let m = rand(&[1, 6 * h], 2);
        let shift = m.narrow(1, h, h).unwrap();
        let scale = m.narrow(1, 4 * h, h).unwrap();
        let (xv, sh, sc) = (
            x.to_vec2::<f32>().unwrap(),
            shift.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            scale.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let mut got = vec![0f32; t * h];
        for (src, dst) in xv.iter().zip(got.chunks_exact_mut(h)) {
            ln_modulate_row(src, &sh, &sc, dst);
        }
        let got = Tensor::from_vec(got, (t, h), &Device::Cpu).unwrap();
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let xc = x.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let ln = xc
            .broadcast_div(&(var + LN_EPS).unwrap().sqrt().unwrap())
            .unwrap();
        let want = ln
            .broadcast_mul(&(scale + 1.0).unwrap())
            .unwrap()
            .broadcast_add(&shift)
            .unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    #[test]
    fn attention_matches_candle_ops() {
        // T = 37 / 70 and hd = 12 / 72: sizes off the kernels' register blocks (hd 72 spans two column blocks);
        // batch 2 checks the per-sample offsets.
        // T = 130: three 64-key blocks of the tiles' blocked kᵀ, the last ragged.
        for (b, t, nh, hd) in [(2, 37, 3, 12), (1, 70, 2, 72), (1, 130, 2, 64)] {
            let h = nh * hd;
            let qkv = rand(&[b, t, 3 * h], 21);
            let part = |j: usize| {
                qkv.narrow(D::Minus1, j * h, h)
                    .unwrap()
                    .reshape((b, t, nh, hd))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let reference = |q: &Tensor, k: &Tensor, v: &Tensor| {
                let w =
                    candle_nn::ops::softmax_last_dim(&q.matmul(&k.t().unwrap()).unwrap()).unwrap();
                w.matmul(v)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((b, t, h))
                    .unwrap()
            };
            let (q, k, v) = (part(0), part(1), part(2));
            let want = reference(&q, &k, &v);
            // The bf16 products see q, k, v rounded to bf16 (and the numerators: the rest of the error).
            let round = |x: &Tensor| {
                x.to_dtype(DType::BF16)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
            };
            let want_bf16 = reference(&round(&q), &round(&k), &round(&v));
            let mut products = vec![(Products::Gemm, 1e-5)];
            if let CpuKernels::Avx512 { bf16 } = CpuKernels::detect() {
                products.push((Products::Avx512, 1e-5));
                if bf16 {
                    // Against the rounded operands, only the numerators' rounding (2^-9 relative) is left.
                    products.push((Products::Avx512Bf16, 5e-3));
                }
            }
            for (p, tol) in products {
                let got = attention_with(&qkv, nh, p).unwrap();
                assert_eq!(got.dims(), &[b, t, h]);
                let err = max_abs_diff(
                    &got,
                    if p == Products::Avx512Bf16 {
                        &want_bf16
                    } else {
                        &want
                    },
                );
                assert!(err < tol, "{p:?} t {t} hd {hd}: {err}");
                if p == Products::Avx512Bf16 {
                    assert!(err > 0.0, "bf16 rounding must show");
                }
            }
            assert!(attention_with(&qkv, 5, Products::Gemm).is_err());
        }
    }

    #[test]
    fn attention_into_a_dirty_buffer_writes_every_element() {
        let (b, t, nh, hd) = (2, 21, 3, 8);
        let qkv = rand(&[b, t, 3 * nh * hd], 5);
        let fresh = attention_with(&qkv, nh, products_for(false)).unwrap();
        let data = qkv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut out = vec![f32::NAN; 2 * b * t * nh * hd];
        attention_into(&data, (b, t, 3 * nh * hd), nh, false, &mut out).unwrap();
        assert_eq!(out, fresh.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert!(attention_into(&data[1..], (b, t, 3 * nh * hd), nh, false, &mut out).is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_softmax_numerators_match_the_portable_ones() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for n in [1, 16, 37, 256] {
            let row: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.21)
                .collect();
            let (mut fast, mut slow) = (row.clone(), row.clone());
            // SAFETY: AVX-512F checked above.
            let sf = unsafe { exp_shifted_avx512(&mut fast) };
            let ss = exp_shifted_body(&mut slow);
            assert!((sf - ss).abs() <= 1e-6 * ss, "n {n}: sum {sf} vs {ss}");
            for (a, b) in fast.iter().zip(&slow) {
                assert!(
                    (a - b).abs() <= 2e-7 * b.max(1e-30) + 1e-38,
                    "n {n}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn only_cpu_inference_takes_the_fast_path() {
        assert_eq!(
            cpu_format(&Device::Cpu, DType::F32, false),
            Some(WeightFormat::F32)
        );
        assert_eq!(cpu_format(&Device::Cpu, DType::F32, true), None);
        assert_eq!(cpu_format(&Device::Cpu, DType::F16, false), None);
        let bf16 = CpuKernels::detect()
            .has_bf16()
            .then_some(WeightFormat::Bf16);
        assert_eq!(cpu_format(&Device::Cpu, DType::BF16, false), bf16);
    }
}
