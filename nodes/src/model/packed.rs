//! Dense layers for the fused CPU path, with the weights packed once at load: `y = epilogue(x W + b)` for
//! `x` `[M, K]` (row-major f32), `W` `[K, N]`.
//!
//! On CPUs with AVX-512 the kernel is split into panels of 48 columns, each stored as a `[K, 48]` row-major block
//! (zero-padded past `N`), in f32 or (AVX512-BF16) bf16 with rows interleaved in pairs, and multiplied by the
//! tiles of [`super::avx512`]: the whole depth in registers, the bias, GELU or gated residual applied before the
//! single store, the panels split across the rayon pool. CPUs with AVX2 and FMA but not AVX-512 multiply the same f32
//! panels with the `4 x 24` sub-tiles of [`super::avx2`], unless the build has the `blas` feature: then the kernel
//! stays row-major and the system CBLAS multiplies it ([`super::blas`]), followed by the epilogue as a second pass.
//! Elsewhere (or with `ODELT_CPU_KERNELS=portable`) the `gemm` crate multiplies the row-major kernel.
//!
//! A product can write its output straight into the next product's packed input ([`RowTiles`]: f32 row tiles,
//! or bf16 pairs for `vdpbf16ps` layers), which the MLP uses: its 4H-wide hidden layer is never stored row-major
//! nor packed a second time.
//!
//! Why our own kernel (measured in docs/benchmarks.md): the `gemm` crate under candle packs the weights on every
//! call, cannot fuse the element-wise work that follows each product, and has no bf16 dot-product kernel.

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use super::aligned::Aligned;
use super::avx512::{self, Ahead, TileEpilogue, MR, NR};
use super::fused::{gelu_tanh, ln_modulate_row};
#[cfg(target_arch = "x86_64")]
use super::{amx, avx2};
use crate::error::{Error, Result};

/// What is stored for the weights and multiplied with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// f32 (exact).
    F32,
    /// bf16 weights, activations rounded to bf16 for the product, f32 accumulation and epilogue (AVX512-BF16).
    Bf16,
}

/// The value of the environment variable `var` among `choices` (name, value, whether it runs in this build on this
/// CPU), if it names one that runs; any other non-empty value is reported on stderr, with the choices, and ignored.
fn env_override<T: Copy>(var: &str, choices: &[(&str, T, bool)]) -> Option<T> {
    let v = std::env::var(var).ok().filter(|v| !v.is_empty())?;
    if let Some(&(_, t, true)) = choices.iter().find(|c| c.0 == v) {
        return Some(t);
    }
    let names: Vec<String> = choices
        .iter()
        .map(|&(n, _, runs)| {
            if runs {
                format!("`{n}`")
            } else {
                format!("`{n}` (not in this build or on this CPU)")
            }
        })
        .collect();
    eprintln!(
        "odelt: ignoring {var}={v:?}: expected {}",
        names.join(" or ")
    );
    None
}

/// How bf16 weights are multiplied on an AVX-512 CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Products {
    /// `vdpbf16ps`: the activations rounded to bf16 too, two products per f32 lane and instruction (AVX512-BF16).
    Dot,
    /// The bf16 weights widened to f32 panels ([`avx512::widen_bf16_panel`]; in registers for a single row tile),
    /// f32 activations and FMAs.
    Widen,
    /// Intel AMX tiles ([`super::amx`]): the activations rounded to bf16, `32 x 48` blocks of `tdpbf16ps`, the
    /// same arithmetic as `Dot`; on the development Xeon 5.2-7.0x `Dot`'s GFLOP/s in DiT-B's block products and
    /// 3.5-5.0x the f32 tiles' (`odelt-bench gemm`, 2026-12-03, docs/benchmarks.md).
    Amx,
}

impl Bf16Products {
    /// Chosen once per process: `Amx` where the CPU and OS run AMX, else `Dot` where the CPU has AVX512-BF16 and
    /// its `vdpbf16ps` does at least 1.3x the FLOP of its FMA (a register-only probe of about a millisecond: 2.0x
    /// on AMD Zen 5, 0.5x on an Intel Xeon, docs/benchmarks.md), else `Widen`. `ODELT_BF16_PRODUCTS=amx`, `dot` or
    /// `widen` (read at the first call) overrides the choice; a choice the CPU cannot run is ignored, with a
    /// message.
    pub fn detect() -> Self {
        static DETECTED: OnceLock<Bf16Products> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let choices = [
                ("widen", Bf16Products::Widen, true),
                ("dot", Bf16Products::Dot, Bf16Products::Dot.supported()),
                ("amx", Bf16Products::Amx, Bf16Products::Amx.supported()),
            ];
            if let Some(p) = env_override("ODELT_BF16_PRODUCTS", &choices) {
                return p;
            }
            if Bf16Products::Amx.supported() {
                return Bf16Products::Amx;
            }
            if Bf16Products::Dot.supported() && dot_over_fma_rate() >= 1.3 {
                Bf16Products::Dot
            } else {
                Bf16Products::Widen
            }
        })
    }

    /// Whether this CPU can run these products.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let base = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw");
            match self {
                Bf16Products::Widen => base,
                Bf16Products::Dot => base && std::arch::is_x86_feature_detected!("avx512bf16"),
                Bf16Products::Amx => base && super::amx::available(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// A short name for benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Products::Dot => "bf16 dot products (vdpbf16ps)",
            Bf16Products::Widen => "bf16 weights widened to f32 FMAs",
            Bf16Products::Amx => "bf16 AMX tiles (tdpbf16ps)",
        }
    }

    /// Depth pairs per packed panel for depth `k`: the AMX tiles step 32 deep, so their panels are zero-padded
    /// to a multiple of 16 pairs.
    fn panel_pairs(self, k: usize) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Products::Amx => k.div_ceil(super::amx::TK) * super::amx::TK / 2,
            _ => k.div_ceil(2),
        }
    }

    /// Where the weight of depth pair `q`, panel column `j`, depth parity `h` sits in a panel: pair rows of 96
    /// bf16 for the `vdpbf16ps` tiles, contiguous 1 KB tiles per 32-deep step for AMX ([`super::amx::weight_index`]).
    fn panel_index(self, q: usize, j: usize, h: usize) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Products::Amx => super::amx::weight_index(q, j, h),
            _ => q * 2 * NR + 2 * j + h,
        }
    }

    /// The strides (bf16 values) the `vdpbf16ps` tile ([`avx512::tile_bf16`]) steps by inside a 16-pair block of
    /// these panels: from one pair to the next, and from one 16-column vector to the next.
    #[cfg(target_arch = "x86_64")]
    fn dot_strides(self) -> (usize, usize) {
        match self {
            Bf16Products::Amx => (32, 16 * 32),
            _ => (2 * NR, 32),
        }
    }
}

/// The last bf16 panel this thread widened to f32 (`Bf16Products::Widen`): a task's tiles of one panel follow each
/// other, so each panel is widened once per row block (1/16 of its tiles at 128 rows) instead of inside every tile,
/// where the two extra operations per 16 FMAs cost 12-16 % on a CPU whose FMA ports also do the shifts.
#[derive(Default)]
struct Widened {
    /// (layer id, panel) of `data`.
    panel: Option<(u64, usize)>,
    data: Vec<f32>,
}

thread_local! {
    static WIDENED: RefCell<Widened> = RefCell::default();
}

/// FLOP of register-only `vdpbf16ps` chains over f32 FMA chains, each the best of three short passes.
fn dot_over_fma_rate() -> f64 {
    const ITERS: usize = 20_000;
    let (mut fma, mut dot) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        for bf16 in [false, true] {
            let t0 = std::time::Instant::now();
            if arithmetic_chains(bf16, ITERS).is_some() {
                let best = if bf16 { &mut dot } else { &mut fma };
                *best = best.min(t0.elapsed().as_secs_f64().max(1e-9));
            }
        }
    }
    // A dot product does twice the FLOP of an FMA per lane.
    2.0 * fma / dot
}

/// `iters` rounds of [`avx512::CHAINS`] independent 16-lane f32 FMAs (or `vdpbf16ps` with `bf16`; 8-lane FMAs on
/// an AVX2 CPU) in registers on the calling thread: the FLOP done, or `None` where the CPU lacks the instruction.
/// The probe of [`Bf16Products::detect`] and of `odelt-bench gemm`'s arithmetic peak.
pub fn arithmetic_chains(bf16: bool, iters: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let flop = (iters * avx512::CHAINS * 16) as f64 * if bf16 { 4.0 } else { 2.0 };
        if bf16 && std::arch::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: the feature was just detected.
            std::hint::black_box(unsafe { avx512::chains_bf16(iters) });
            return Some(flop);
        }
        if !bf16 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: as above.
            std::hint::black_box(unsafe { avx512::chains_f32(iters) });
            return Some(flop);
        }
        if !bf16 && CpuKernels::Avx2.supported() {
            // SAFETY: AVX2 and FMA were just detected.
            std::hint::black_box(unsafe { avx2::chains_f32(iters) });
            return Some((iters * avx2::CHAINS * 8 * 2) as f64);
        }
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (bf16, iters);
        None
    }
}

/// Depth of [`tile_ceiling`]'s panel: DiT-B's hidden size (the panel, 147 KB, stays in L2 beside its row tile).
const CEILING_DEPTH: usize = 768;

/// [`tile_ceiling`]'s operands: a row tile and a panel (random values), and an output tile.
type CeilingOperands = (Aligned<f32>, Aligned<f32>, Vec<f32>);

thread_local! {
    /// [`tile_ceiling`]'s operands on this thread, made at its first call.
    static CEILING: RefCell<Option<CeilingOperands>> = const { RefCell::new(None) };
}

/// `reps` full `8 x 48` f32 tiles of `kernels` (the AVX-512 tile, or the AVX2 sub-tiles) over one 768-deep
/// panel on the calling thread, operands random and L2-resident, bias epilogue: the FLOP done, or `None` where
/// `kernels` is not a tile kernel this CPU runs. What the packed products can reach at best, between the
/// register-only [`arithmetic_chains`] (no memory, no data-dependent power) and the products of
/// `odelt-bench gemm` (weights from L3 or memory, packing, the threads' split).
pub fn tile_ceiling(kernels: CpuKernels, reps: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !matches!(kernels, CpuKernels::Avx512 { .. } | CpuKernels::Avx2) || !kernels.supported()
        {
            return None;
        }
        let k = CEILING_DEPTH;
        CEILING.with_borrow_mut(|slot| {
            let (a, w, c) = slot.get_or_insert_with(|| {
                let fill = |n: usize, step: f64| {
                    let mut v = Aligned::<f32>::zeroed(n);
                    for (i, x) in v.iter_mut().enumerate() {
                        *x = ((i as f64 * step).fract() - 0.5) as f32;
                    }
                    v
                };
                (
                    fill(k * MR, 0.618_034),
                    fill(k * NR, 0.377_964),
                    vec![0f32; MR * NR],
                )
            });
            let bias = [0f32; NR];
            for _ in 0..reps {
                // SAFETY: the kernel runs on this CPU (checked above); `a` holds a `[k, 8]` row tile, `w` a `[k, 48]`
                // panel, `c` an `8 x 48` tile with row stride 48.
                unsafe {
                    let (a, w, c) = (a.as_ptr(), w.as_ptr(), c.as_mut_ptr());
                    if kernels == CpuKernels::Avx2 {
                        avx2::tile_f32(
                            MR,
                            k,
                            a,
                            w,
                            bias.as_ptr(),
                            c,
                            NR,
                            NR,
                            TileEpilogue::Bias,
                            Ahead::NONE,
                        );
                    } else {
                        avx512::tile_f32::<MR>(
                            k,
                            a,
                            w,
                            bias.as_ptr(),
                            c,
                            NR,
                            NR,
                            TileEpilogue::Bias,
                            Ahead::NONE,
                        );
                    }
                }
            }
            std::hint::black_box(&c);
        });
        Some((2 * reps * k * MR * NR) as f64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernels, reps);
        None
    }
}

/// The CPU kernels this process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuKernels {
    /// The packed AVX-512 tiles (f32, and bf16 where AVX512-BF16 is present).
    Avx512 { bf16: bool },
    /// The packed f32 panels multiplied by AVX2/FMA sub-tiles (f32 only).
    Avx2,
    /// The `gemm` crate plus a separate epilogue pass (f32 only).
    Portable,
    /// The system CBLAS's `sgemm` plus the same epilogue pass (f32 only; builds with the `blas` feature).
    Blas,
}

impl CpuKernels {
    /// Detected once per process from the CPU: the AVX-512 tiles where they run, else the system BLAS in a `blas`
    /// build, else the AVX2 tiles, else the `gemm` crate (the order measured with AVX2 code on an AVX-512 machine,
    /// docs/benchmarks.md: OpenBLAS's Haswell kernels about 6 % ahead of the AVX2 tiles at batch 1, those 3-13 %
    /// ahead of the `gemm` crate's AVX2 kernels). `ODELT_CPU_KERNELS` (read at the first call) overrides
    /// it with `avx2`, `portable`, or `blas` in a `blas` build, for comparisons and to test those paths on AVX-512
    /// machines; any other value is reported on stderr and ignored.
    pub fn detect() -> Self {
        static DETECTED: OnceLock<CpuKernels> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let choices = [
                ("portable", CpuKernels::Portable, true),
                ("avx2", CpuKernels::Avx2, CpuKernels::Avx2.supported()),
                ("blas", CpuKernels::Blas, CpuKernels::Blas.supported()),
            ];
            if let Some(k) = env_override("ODELT_CPU_KERNELS", &choices) {
                return k;
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                return CpuKernels::Avx512 {
                    bf16: std::arch::is_x86_feature_detected!("avx512bf16"),
                };
            }
            if CpuKernels::Blas.supported() {
                return CpuKernels::Blas;
            }
            if CpuKernels::Avx2.supported() {
                return CpuKernels::Avx2;
            }
            CpuKernels::Portable
        })
    }

    /// Whether this CPU can run these kernels (the hardware, whatever `ODELT_CPU_KERNELS` says).
    pub fn supported(self) -> bool {
        match self {
            CpuKernels::Portable => true,
            CpuKernels::Blas => super::blas::LINKED,
            #[cfg(target_arch = "x86_64")]
            CpuKernels::Avx512 { bf16 } => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && (!bf16 || std::arch::is_x86_feature_detected!("avx512bf16"))
            }
            #[cfg(target_arch = "x86_64")]
            CpuKernels::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            CpuKernels::Avx512 { .. } | CpuKernels::Avx2 => false,
        }
    }

    /// Whether the bf16 format can be multiplied here (on any AVX-512 CPU: see [`Bf16Products`]).
    pub fn has_bf16(self) -> bool {
        matches!(self, CpuKernels::Avx512 { .. }) && Bf16Products::Widen.supported()
    }

    /// A short name for benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
            CpuKernels::Avx512 { bf16: true } => "odelt avx512 (+avx512bf16)",
            CpuKernels::Avx512 { bf16: false } => "odelt avx512",
            CpuKernels::Avx2 => "odelt avx2",
            CpuKernels::Portable => "gemm crate (portable)",
            CpuKernels::Blas => "system BLAS",
        }
    }
}

/// What follows the product, per output element `(row, col)`.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `acc + bias`
    Bias,
    /// `gelu_tanh(acc + bias)`
    BiasGelu,
    /// `residual[row, col] + gate[(row / rows_per_gate) * gate_stride + col] * (acc + bias)`: adaLN-Zero's gated
    /// residual, with one gate row per sample of `rows_per_gate` tokens.
    GatedResidual {
        residual: &'a [f32],
        gate: &'a [f32],
        gate_stride: usize,
        rows_per_gate: usize,
    },
}

/// A prologue applied to each row of `x` as it is packed: adaLN's `LayerNorm(x) * (1 + scale) + shift` with one
/// `shift` / `scale` row (of length `K`, at `sample * stride`) per sample of `rows_per_sample` rows. Fused into the
/// packing, so the normalised activations are never written out.
#[derive(Debug, Clone, Copy)]
pub struct LnRows<'a> {
    pub shift: &'a [f32],
    pub scale: &'a [f32],
    pub stride: usize,
    pub rows_per_sample: usize,
}

impl LnRows<'_> {
    /// Row `r` of `x` (`src`) through the prologue into `dst`.
    fn apply(&self, r: usize, src: &[f32], dst: &mut [f32]) {
        let off = (r / self.rows_per_sample) * self.stride;
        let k = src.len();
        ln_modulate_row(src, &self.shift[off..][..k], &self.scale[off..][..k], dst);
    }
}

#[derive(Debug)]
enum Weights {
    /// `[K, 48]` panels, multiplied by the AVX-512 tiles or (`avx2`) the AVX2 sub-tiles.
    F32Panels { w: Aligned<f32>, avx2: bool },
    /// Pair-interleaved bf16 panels, multiplied as `products` says.
    Bf16Panels {
        w: Aligned<u16>,
        products: Bf16Products,
        /// Names the panels in [`WIDENED`].
        id: u64,
    },
    /// Row-major `[K, N]`, multiplied by the `gemm` crate or (`blas`) the system CBLAS.
    RowMajor { w: Vec<f32>, blas: bool },
}

/// A dense layer `[K] -> [N]` with its kernel packed for [`PackedLinear::forward`]. Cloning shares the weights.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    k: usize,
    n: usize,
    bias: Arc<[f32]>,
    weights: Arc<Weights>,
}

/// Bytes of packed `A` per row block: the block stays in L2 (1 MB per core on the development machine, with the
/// current weight panel beside it) while every panel of a task passes over it. 384 KB = 128 f32 rows at K = 768,
/// the best of 64-4096 rows for the DiT-B products at batch 8 (`odelt-bench gemm --batch 8`).
const A_BLOCK_BYTES: usize = 384 << 10;

/// Rows per block of `A` for depth `k` and `bytes` per packed element: a multiple of the tile height, and at least
/// [`MIN_BLOCK_ROWS`].
fn row_block(k: usize, bytes: usize) -> usize {
    (A_BLOCK_BYTES / (k * bytes).max(1) / MR * MR).clamp(MIN_BLOCK_ROWS, 512)
}

/// The fewest rows per block of `A`: below this, a panel is fetched from L3 or memory for too few tiles. Deep
/// products (the MLP out layer, K = 3072) used to get 32-row blocks from the byte budget; their A block now spills
/// to L3, which the tile's 32 bytes per depth step tolerate, and each panel serves 16 tiles: about 3 % faster at
/// batch 1, the same at batch 8 (interleaved A/B, 2026-12-02, docs/benchmarks.md).
const MIN_BLOCK_ROWS: usize = 16 * MR;

impl PackedLinear {
    /// Packs a row-major `[k, n]` kernel and its `[n]` bias for `kernels`. `Bf16` needs AVX-512 and is multiplied
    /// by [`Bf16Products::detect`]'s products.
    pub fn pack(
        kernel: &[f32],
        bias: &[f32],
        k: usize,
        n: usize,
        format: WeightFormat,
        kernels: CpuKernels,
    ) -> Result<Self> {
        Self::pack_with(kernel, bias, k, n, format, kernels, Bf16Products::detect())
    }

    /// [`PackedLinear::pack`] with the bf16 products chosen by the caller (benchmarks and tests compare both).
    pub fn pack_with(
        kernel: &[f32],
        bias: &[f32],
        k: usize,
        n: usize,
        format: WeightFormat,
        kernels: CpuKernels,
        products: Bf16Products,
    ) -> Result<Self> {
        if kernel.len() != k * n || bias.len() != n || k == 0 || n == 0 {
            return Err(Error::invalid(format!(
                "packing a [{k}, {n}] layer from {} kernel and {} bias values",
                kernel.len(),
                bias.len()
            )));
        }
        if !kernels.supported() {
            return Err(Error::invalid(format!(
                "this CPU cannot run the {} kernels",
                kernels.name()
            )));
        }
        let panels = n.div_ceil(NR);
        let weights = match (kernels, format) {
            (CpuKernels::Portable | CpuKernels::Blas, WeightFormat::F32) => Weights::RowMajor {
                w: kernel.to_vec(),
                blas: kernels == CpuKernels::Blas,
            },
            (CpuKernels::Avx512 { .. } | CpuKernels::Avx2, WeightFormat::F32) => {
                let mut w = Aligned::zeroed(panels * k * NR);
                w.par_chunks_mut(k * NR).enumerate().for_each(|(p, panel)| {
                    let cols = (n - p * NR).min(NR);
                    for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                        row[..cols].copy_from_slice(&kernel[kk * n + p * NR..][..cols]);
                    }
                });
                Weights::F32Panels {
                    w,
                    avx2: kernels == CpuKernels::Avx2,
                }
            }
            (CpuKernels::Avx512 { .. }, WeightFormat::Bf16) if products.supported() => {
                let pairs = products.panel_pairs(k);
                let mut w = Aligned::zeroed(panels * pairs * 2 * NR);
                w.par_chunks_mut(pairs * 2 * NR)
                    .enumerate()
                    .for_each(|(p, panel)| {
                        let cols = (n - p * NR).min(NR);
                        for kk in 0..k {
                            let row = &kernel[kk * n + p * NR..][..cols];
                            for (j, &v) in row.iter().enumerate() {
                                panel[products.panel_index(kk / 2, j, kk % 2)] =
                                    avx512::bf16_bits(v);
                            }
                        }
                    });
                static NEXT_ID: AtomicU64 = AtomicU64::new(0);
                Weights::Bf16Panels {
                    w,
                    products,
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                }
            }
            (_, WeightFormat::Bf16) => {
                return Err(Error::invalid(format!(
                    "bf16 CPU layers need a CPU with AVX-512{}",
                    match products {
                        Bf16Products::Dot => " and AVX512-BF16 (for the dot products)",
                        Bf16Products::Amx => " and AMX, granted by the OS (for the AMX tiles)",
                        Bf16Products::Widen => "",
                    }
                )))
            }
        };
        Ok(PackedLinear {
            k,
            n,
            bias: bias.into(),
            weights: Arc::new(weights),
        })
    }

    pub fn fan_in(&self) -> usize {
        self.k
    }

    pub fn fan_out(&self) -> usize {
        self.n
    }

    pub fn format(&self) -> WeightFormat {
        match *self.weights {
            Weights::Bf16Panels { .. } => WeightFormat::Bf16,
            _ => WeightFormat::F32,
        }
    }

    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// The kernel as row-major `[k, n]` f32 (the stored values: bf16-rounded for the bf16 format).
    pub fn unpack(&self) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut out = vec![0f32; k * n];
        match &*self.weights {
            Weights::RowMajor { w, .. } => out.copy_from_slice(w),
            Weights::F32Panels { w, .. } => {
                for kk in 0..k {
                    for j in 0..n {
                        out[kk * n + j] = w[(j / NR) * k * NR + kk * NR + j % NR];
                    }
                }
            }
            Weights::Bf16Panels { w, products, .. } => {
                let pairs = products.panel_pairs(k);
                for kk in 0..k {
                    for j in 0..n {
                        let bits = w[(j / NR) * pairs * 2 * NR
                            + products.panel_index(kk / 2, j % NR, kk % 2)];
                        out[kk * n + j] = f32::from_bits(u32::from(bits) << 16);
                    }
                }
            }
        }
        out
    }

    /// `epilogue(a W + b)` for `a` row-major `[m, k]`; returns row-major `[m, n]`.
    pub fn forward(&self, a: &[f32], m: usize, epi: Epilogue) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.forward_inner(Input::Rows(a, None), m, epi, &mut out, false)?;
        Ok(out)
    }

    /// [`PackedLinear::forward`] into `out` (its previous contents dropped, its capacity reused: a buffer from
    /// [`BUFFERS`] is already faulted in).
    pub fn forward_into(
        &self,
        a: &[f32],
        m: usize,
        epi: Epilogue,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.forward_inner(Input::Rows(a, None), m, epi, out, false)
    }

    /// The [`RowTiles`] this layer can hand its output to the next one as and take as input: f32 row tiles for
    /// f32 panels and bf16 panels with widened products, bf16 pairs for `vdpbf16ps` products; none for the
    /// AMX, BLAS and portable layers (which pack or read their input their own way).
    pub fn row_tiles(&self) -> Option<RowTileFormat> {
        match *self.weights {
            Weights::F32Panels { .. }
            | Weights::Bf16Panels {
                products: Bf16Products::Widen,
                ..
            } => Some(RowTileFormat::F32),
            Weights::Bf16Panels {
                products: Bf16Products::Dot,
                ..
            } => Some(RowTileFormat::Bf16Pairs),
            _ => None,
        }
    }

    /// How the bf16 weights are multiplied (`None` for f32 layers).
    pub fn bf16_products(&self) -> Option<Bf16Products> {
        match *self.weights {
            Weights::Bf16Panels { products, .. } => Some(products),
            _ => None,
        }
    }

    /// [`PackedLinear::forward_ln`] with the output written straight into the packed input layout of the next
    /// product (`Bias` or `BiasGelu` only), which then skips its packing pass ([`PackedLinear::forward_tiles`]).
    pub fn forward_ln_to_tiles(
        &self,
        x: &[f32],
        m: usize,
        ln: LnRows,
        epi: Epilogue,
    ) -> Result<RowTiles> {
        self.check_ln(m, &ln)?;
        let format = self.row_tiles().ok_or_else(|| {
            Error::invalid("this layer's products cannot write row tiles".to_string())
        })?;
        let len = format.len(m, self.n);
        let data = match format {
            RowTileFormat::F32 => {
                let mut data = SCRATCH_F32.take_empty(len);
                self.forward_inner(Input::Rows(x, Some(ln)), m, epi, &mut data, true)?;
                TileData::F32(data)
            }
            RowTileFormat::Bf16Pairs => {
                // The tiles write the pairs through the product's f32 output slots: the pool's u32 buffer,
                // viewed as f32 for the call (same size and alignment, no copy).
                let mut data: Vec<f32> =
                    bytemuck::allocation::cast_vec(SCRATCH_U32.take_empty(len));
                let done = self.forward_inner(Input::Rows(x, Some(ln)), m, epi, &mut data, true);
                let data: Vec<u32> = bytemuck::allocation::cast_vec(data);
                if let Err(e) = done {
                    SCRATCH_U32.put(data);
                    return Err(e);
                }
                TileData::Bf16(data)
            }
        };
        Ok(RowTiles { data, m, k: self.n })
    }

    /// [`PackedLinear::forward`] on input already packed by the previous layer.
    pub fn forward_tiles(&self, a: &RowTiles, epi: Epilogue) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.forward_inner(Input::Tiles(a), a.m, epi, &mut out, false)?;
        Ok(out)
    }

    /// `epilogue(ln(x) W + b)` with the [`LnRows`] prologue on each row of `x` `[m, k]`.
    pub fn forward_ln(&self, x: &[f32], m: usize, ln: LnRows, epi: Epilogue) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.forward_ln_into(x, m, ln, epi, &mut out)?;
        Ok(out)
    }

    fn check_ln(&self, m: usize, ln: &LnRows) -> Result<()> {
        let samples = m.div_ceil(ln.rows_per_sample.max(1));
        let need = samples.saturating_sub(1) * ln.stride + self.k;
        if ln.rows_per_sample == 0 || (m > 0 && (ln.shift.len() < need || ln.scale.len() < need)) {
            return Err(Error::invalid(format!(
                "LayerNorm prologue of a [{m}, {}] product: {} shift and {} scale values (stride {}, {} rows \
                 per sample)",
                self.k,
                ln.shift.len(),
                ln.scale.len(),
                ln.stride,
                ln.rows_per_sample
            )));
        }
        Ok(())
    }

    /// [`PackedLinear::forward_ln`] into `out`, as [`PackedLinear::forward_into`].
    pub fn forward_ln_into(
        &self,
        x: &[f32],
        m: usize,
        ln: LnRows,
        epi: Epilogue,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.check_ln(m, &ln)?;
        self.forward_inner(Input::Rows(x, Some(ln)), m, epi, out, false)
    }

    /// The product for every input and output form; `to_tiles` writes `out` as [`RowTiles`] data.
    fn forward_inner(
        &self,
        input: Input,
        m: usize,
        epi: Epilogue,
        out: &mut Vec<f32>,
        to_tiles: bool,
    ) -> Result<()> {
        let (k, n) = (self.k, self.n);
        match input {
            Input::Rows(a, _) if a.len() != m * k => {
                return Err(Error::invalid(format!(
                    "a [{m}, {k}] product got {} input values",
                    a.len()
                )))
            }
            Input::Tiles(t) if t.k != k || t.m != m => {
                return Err(Error::invalid(format!(
                    "a [{m}, {k}] product got packed rows of [{}, {}]",
                    t.m, t.k
                )))
            }
            _ => {}
        }
        let tiles_out = if to_tiles {
            Some(self.row_tiles().ok_or_else(|| {
                Error::invalid("this layer's products cannot write row tiles".to_string())
            })?)
        } else {
            None
        };
        if let Input::Tiles(t) = input {
            if self.row_tiles() != Some(t.format()) {
                return Err(Error::invalid(format!(
                    "row tiles of {:?} handed to a layer that reads {:?}",
                    t.format(),
                    self.row_tiles()
                )));
            }
        }
        if to_tiles && matches!(epi, Epilogue::GatedResidual { .. }) {
            return Err(Error::invalid(
                "a gated residual cannot be written as row tiles".to_string(),
            ));
        }
        if let Epilogue::GatedResidual {
            residual,
            gate,
            gate_stride,
            rows_per_gate,
        } = epi
        {
            let samples = if m == 0 {
                0
            } else {
                (m - 1) / rows_per_gate.max(1) + 1
            };
            if residual.len() != m * n
                || rows_per_gate == 0
                || (samples > 0 && (samples - 1) * gate_stride + n > gate.len())
            {
                return Err(Error::invalid(format!(
                    "gated residual of a [{m}, {n}] product: {} residual values, {} gate values (stride \
                     {gate_stride}, {rows_per_gate} rows per gate)",
                    residual.len(),
                    gate.len()
                )));
            }
        }
        if m == 0 {
            out.clear();
            return Ok(());
        }
        out.clear();
        out.reserve(m * n);
        match &*self.weights {
            &Weights::RowMajor { ref w, blas } => {
                let Input::Rows(a, ln) = input else {
                    unreachable!("checked above: row tiles need f32 panels")
                };
                out.resize(m * n, 0.0);
                let normed: Vec<f32>;
                let a = match ln {
                    None => a,
                    Some(ln) => {
                        let mut v = vec![0f32; m * k];
                        v.par_chunks_mut(k)
                            .zip(a.par_chunks(k))
                            .enumerate()
                            .for_each(|(r, (dst, src))| ln.apply(r, src, dst));
                        normed = v;
                        &normed
                    }
                };
                if blas {
                    super::blas::sgemm(m, n, k, a, w, out)?;
                } else {
                    // SAFETY: the extents match the strides given (checked above).
                    unsafe {
                        gemm_rows(
                            (m, n, k),
                            out.as_mut_ptr(),
                            n,
                            (a.as_ptr(), 1, k as isize),
                            (w.as_ptr(), 1, n as isize),
                            gemm::Parallelism::Rayon(rayon::current_num_threads().max(1)),
                        );
                    }
                }
                portable_epilogue(out, n, &self.bias, epi);
            }
            #[cfg(not(target_arch = "x86_64"))]
            Weights::F32Panels { .. } | Weights::Bf16Panels { .. } => {
                unreachable!("packed panels are only built on x86_64 (`pack` checks `supported`)")
            }
            #[cfg(target_arch = "x86_64")]
            Weights::F32Panels { .. }
            | Weights::Bf16Panels {
                products: Bf16Products::Widen,
                ..
            } => {
                // Packed here unless the previous layer handed its rows over packed (then `packed` stays empty).
                let mut packed = Vec::new();
                let ap: &[f32] = match input {
                    Input::Rows(a, ln) => {
                        packed = pack_rows_f32(a, m, k, ln);
                        &packed
                    }
                    Input::Tiles(t) => t.data.f32_tiles(),
                };
                if let Some(f) = tiles_out {
                    out.reserve(f.len(m, n));
                }
                let tile = |r0: usize, rows, p, c, ldc, cols, te, next| {
                    // SAFETY: `r0` is a multiple of MR below `m` (so its packed tile exists), panel `p` exists, `c`
                    // points at row r0 / panel p of `out`; `next` names lines of an existing panel.
                    unsafe {
                        let a = ap.as_ptr().add(r0 * k);
                        let bias = self.bias.as_ptr().add(p * NR);
                        match &*self.weights {
                            &Weights::F32Panels { ref w, avx2 } => {
                                let next = ahead(w.as_ptr().cast(), k * NR * 4, next);
                                let w = w.as_ptr().add(p * k * NR);
                                if avx2 {
                                    return avx2::tile_f32(
                                        rows, k, a, w, bias, c, ldc, cols, te, next,
                                    );
                                }
                                tile_f32_dyn(rows, k, a, w, bias, c, ldc, cols, te, next)
                            }
                            Weights::Bf16Panels { w, id, .. } => {
                                let panel_len = k.div_ceil(2) * 2 * NR;
                                let next = ahead(w.as_ptr().cast(), panel_len * 2, next);
                                let w_panel = w.as_ptr().add(p * panel_len);
                                if m <= MR {
                                    // One tile per panel: widened in registers, not into a panel.
                                    return avx512::by_rows!(
                                        rows, tile_bf16w, k, a, w_panel, bias, c, ldc, cols, te,
                                        next
                                    );
                                }
                                WIDENED.with_borrow_mut(|wide| {
                                    if wide.panel != Some((*id, p)) {
                                        wide.data.clear();
                                        wide.data.reserve(k * NR);
                                        avx512::widen_bf16_panel(
                                            w_panel,
                                            k,
                                            wide.data.as_mut_ptr(),
                                        );
                                        wide.data.set_len(k * NR);
                                        wide.panel = Some((*id, p));
                                    }
                                    let w = wide.data.as_ptr();
                                    tile_f32_dyn(rows, k, a, w, bias, c, ldc, cols, te, next)
                                })
                            }
                            Weights::RowMajor { .. } => unreachable!("matched above"),
                        }
                    }
                };
                self.tiled(m, out.as_mut_ptr(), epi, tiles_out, MR, false, tile);
                SCRATCH_F32.put(packed);
                // SAFETY: the tiles cover every element of the `[m, n]` output (or, as row tiles, of the
                // `[tiles, n, 8]` blocks: rows past `m` written as zeros).
                unsafe { out.set_len(tiles_out.map_or(m * n, |f| f.len(m, n))) };
            }
            // The AMX layers' products of one row tile (the adaLN rows) too: they are memory-bound, and the
            // `vdpbf16ps` tile streams the panel with prefetches (32.6 against 24.4 GFLOP/s for AMX tiles with one
            // used row, measured before this dispatch existed, docs/benchmarks.md); same arithmetic, and the
            // padded panels start with the same pairs.
            #[cfg(target_arch = "x86_64")]
            &Weights::Bf16Panels {
                ref w, products, ..
            } if products == Bf16Products::Dot || m <= MR => {
                // Packed here unless the previous layer handed its rows over as bf16 pairs.
                let mut packed = Vec::new();
                let ap: &[u32] = match input {
                    Input::Rows(a, ln) => {
                        packed = pack_rows_bf16(a, m, k, ln);
                        &packed
                    }
                    Input::Tiles(t) => t.data.bf16_pairs(),
                };
                let pairs = Bf16Products::Dot.panel_pairs(k);
                let strides = products.dot_strides();
                let panel_len = products.panel_pairs(k) * 2 * NR;
                if let Some(f) = tiles_out {
                    out.reserve(f.len(m, n));
                }
                self.tiled(
                    m,
                    out.as_mut_ptr(),
                    epi,
                    tiles_out,
                    MR,
                    false,
                    |r0, rows, p, c, ldc, cols, te, next| {
                        // SAFETY: as for f32 (a packed tile holds `pairs * 2 * MR` values).
                        unsafe {
                            let next = ahead(w.as_ptr().cast(), panel_len * 2, next);
                            tile_bf16_dyn(
                                rows,
                                pairs,
                                strides,
                                ap.as_ptr().add(r0 * pairs).cast::<u16>(),
                                w.as_ptr().add(p * panel_len),
                                self.bias.as_ptr().add(p * NR),
                                c,
                                ldc,
                                cols,
                                te,
                                next,
                            )
                        }
                    },
                );
                SCRATCH_U32.put(packed);
                // SAFETY: as for f32 (as bf16 row tiles: `[tiles, ceil(n / 2), 8]` pairs, rows past `m` zero).
                unsafe { out.set_len(tiles_out.map_or(m * n, |f| f.len(m, n))) };
            }
            // Left: AMX layers of more than one row tile (`Dot` and `m <= MR` went above).
            #[cfg(target_arch = "x86_64")]
            Weights::Bf16Panels { w, .. } => {
                let Input::Rows(a, ln) = input else {
                    unreachable!("checked above: AMX layers take no row tiles")
                };
                // The depth padded to whole AMX steps: the packed rows' length and twice the panels' pairs.
                let kp = 2 * Bf16Products::Amx.panel_pairs(k);
                let (ap, off) = pack_rows_amx(a, m, k, kp, ln);
                let panel_len = kp * NR;
                self.tiled(
                    m,
                    out.as_mut_ptr(),
                    epi,
                    None,
                    2 * amx::TM,
                    true,
                    |r0, rows, p, c, ldc, cols, te, _next| {
                        let mut block = std::mem::MaybeUninit::<[f32; 2 * amx::TM * NR]>::uninit();
                        let acc = block.as_mut_ptr().cast::<f32>();
                        // SAFETY: `tiled` configured the tiles on this task's thread; `r0` is a multiple of 32
                        // below `m`, so the packed rows hold the tile at r0 and, when `rows > 16`, the next one;
                        // panel `p` holds `kp / 2` pairs; the kernels write the block's first `rows` rows (whole
                        // tiles) before the epilogues read them; `c` points at row r0 of panel p's columns, valid
                        // for `rows` rows.
                        unsafe {
                            let a0 = ap.as_ptr().add(off).cast::<u16>().add(r0 * kp);
                            let w = w.as_ptr().add(p * panel_len);
                            if rows > amx::TM {
                                amx::rows32(kp / amx::TK, a0, a0.add(amx::TM * kp), w, acc);
                            } else {
                                amx::rows16(kp / amx::TK, a0, w, acc);
                            }
                            let bias = self.bias.as_ptr().add(p * NR);
                            let mut r = 0;
                            while r < rows {
                                let part = (rows - r).min(MR);
                                let te = if r == 0 {
                                    te
                                } else {
                                    tile_epilogue(epi, r0 + r, part, p * NR, n)
                                };
                                avx512::by_rows!(
                                    part,
                                    finish_block,
                                    acc.add(r * NR),
                                    bias,
                                    c.add(r * ldc),
                                    ldc,
                                    cols,
                                    te
                                );
                                r += part;
                            }
                        }
                    },
                );
                SCRATCH_U32.put(ap);
                // SAFETY: as for f32.
                unsafe { out.set_len(m * n) };
            }
        }
        Ok(())
    }

    /// Runs `tile(r0, rows, panel, c, ldc, cols, epilogue)` over every `mr x 48` tile of the `[m, n]` output
    /// (`mr` a multiple of [`MR`]), split across the rayon pool: whole panels per task where there are enough of
    /// them (each task's panels pass over the same block of rows of `A` ([`row_block`]), held in L2), otherwise
    /// rows as well. With `amx`, each task configures the AMX tiles for its tiles ([`amx::Tiles`]).
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn tiled(
        &self,
        m: usize,
        out: *mut f32,
        epi: Epilogue,
        to_tiles: Option<RowTileFormat>,
        mr: usize,
        amx: bool,
        tile: impl Fn(usize, usize, usize, *mut f32, usize, usize, TileEpilogue, Option<NextPanel>)
            + Sync,
    ) {
        let n = self.n;
        let panels = n.div_ceil(NR);
        let tiles = m.div_ceil(mr);
        let bytes = match self.bf16_products() {
            Some(Bf16Products::Dot | Bf16Products::Amx) => 2,
            _ => 4,
        };
        let mc = row_block(self.k, bytes) / mr * mr;
        let threads = rayon::current_num_threads().max(1);
        let col_tasks = threads.min(panels);
        let row_tasks = (threads / col_tasks).clamp(1, tiles);
        let dst = SharedOut(out);
        (0..col_tasks * row_tasks).into_par_iter().for_each(|task| {
            // SAFETY: `amx` layers exist only where `Bf16Products::Amx.supported()` (checked by `pack`).
            #[cfg(target_arch = "x86_64")]
            let _tiles = amx.then(|| unsafe { amx::Tiles::configure() });
            let (ct, rt) = (task / row_tasks, task % row_tasks);
            let (p0, p1) = split(panels, col_tasks, ct);
            let (t0, t1) = split(tiles, row_tasks, rt);
            let (rows0, rows1) = (t0 * mr, (t1 * mr).min(m));
            let mut ic = rows0;
            while ic < rows1 {
                let ic_end = (ic + mc).min(rows1);
                let parts = (ic_end - ic).div_ceil(mr);
                for p in p0..p1 {
                    let cols = (n - p * NR).min(NR);
                    let mut r0 = ic;
                    while r0 < ic_end {
                        let rows = (ic_end - r0).min(mr);
                        // SAFETY: the tile lies inside `out` (rows r0.., columns p*48..; or as row tiles, tile r0/8's
                        // block at depth p*48); tasks write disjoint tiles.
                        let gelu = matches!(epi, Epilogue::BiasGelu);
                        let (te, c) = match to_tiles {
                            Some(RowTileFormat::F32) => (TileEpilogue::Tiles { gelu }, unsafe {
                                dst.ptr().add(r0 * n + p * NR * MR)
                            }),
                            // Pairs: tile r0 / 8's block of `ceil(n / 2) * 8`, pair p * 24 of it.
                            Some(RowTileFormat::Bf16Pairs) => {
                                (TileEpilogue::PairTiles { gelu }, unsafe {
                                    dst.ptr().add(r0 * n.div_ceil(2) + p * (NR / 2) * MR)
                                })
                            }
                            None => (tile_epilogue(epi, r0, rows, p * NR, n), unsafe {
                                dst.ptr().add(r0 * n + p * NR)
                            }),
                        };
                        let next = (p + 1 < p1).then_some(NextPanel {
                            panel: p + 1,
                            part: (r0 - ic) / mr,
                            parts,
                        });
                        tile(r0, rows, p, c, n, cols, te, next);
                        r0 += rows;
                    }
                }
                ic = ic_end;
            }
        });
    }
}

/// Which share of the next panel a tile prefetches: part `part` of `parts` (the row tiles of the block).
#[derive(Clone, Copy)]
struct NextPanel {
    panel: usize,
    part: usize,
    parts: usize,
}

/// The [`Ahead`] lines for `next` in panels of `panel_bytes` starting at `w`.
///
/// # Safety
/// Panel `next.panel` exists.
unsafe fn ahead(w: *const i8, panel_bytes: usize, next: Option<NextPanel>) -> Ahead {
    match next {
        None => Ahead::NONE,
        Some(np) => {
            let lines = panel_bytes.div_ceil(64);
            let per = lines.div_ceil(np.parts);
            let start = (np.part * per).min(lines);
            Ahead {
                ptr: w.add(np.panel * panel_bytes + start * 64),
                lines: per.min(lines - start),
            }
        }
    }
}

/// A product's input: row-major `[m, k]` (with the LayerNorm prologue, if any, applied while packing), or rows
/// the previous layer already wrote packed.
#[derive(Clone, Copy)]
enum Input<'a> {
    Rows(&'a [f32], Option<LnRows<'a>>),
    Tiles(&'a RowTiles),
}

/// Activations `[m, k]` in the packed input layout of the next product's tiles (rows past `m` zero), as
/// [`PackedLinear::forward_ln_to_tiles`] writes them: the MLP hidden layer goes from the mlp-in product to the
/// mlp-out product without a row-major copy or a packing pass. The buffer returns to the pool when dropped.
#[derive(Debug)]
pub struct RowTiles {
    data: TileData,
    m: usize,
    k: usize,
}

/// The layout of [`RowTiles`], as [`PackedLinear::row_tiles`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowTileFormat {
    /// f32 row tiles `[k, 8]` (the f32 tiles' input, [`pack_rows_f32`]).
    F32,
    /// bf16 pairs `[ceil(k / 2), 8]` as `u32` (the `vdpbf16ps` tiles' input, [`pack_rows_bf16`]).
    Bf16Pairs,
}

impl RowTileFormat {
    /// Elements (f32 values or bf16 pairs) of `m` rows of depth `k`.
    fn len(self, m: usize, k: usize) -> usize {
        m.div_ceil(MR)
            * MR
            * match self {
                RowTileFormat::F32 => k,
                RowTileFormat::Bf16Pairs => k.div_ceil(2),
            }
    }
}

#[derive(Debug, PartialEq)]
enum TileData {
    F32(Vec<f32>),
    Bf16(Vec<u32>),
}

impl TileData {
    /// The f32 row tiles (the caller checked the format: [`PackedLinear::row_tiles`]).
    fn f32_tiles(&self) -> &[f32] {
        match self {
            TileData::F32(d) => d,
            TileData::Bf16(_) => unreachable!("checked by the caller: the formats match"),
        }
    }

    /// The bf16 pairs (the caller checked the format).
    fn bf16_pairs(&self) -> &[u32] {
        match self {
            TileData::Bf16(d) => d,
            TileData::F32(_) => unreachable!("checked by the caller: the formats match"),
        }
    }
}

impl RowTiles {
    /// The layout of the data.
    pub fn format(&self) -> RowTileFormat {
        match self.data {
            TileData::F32(_) => RowTileFormat::F32,
            TileData::Bf16(_) => RowTileFormat::Bf16Pairs,
        }
    }

    /// Row `r`: `k` values (bf16 pairs widened back to f32).
    #[cfg(test)]
    fn row(&self, r: usize) -> Vec<f32> {
        let (t, i) = (r / MR, r % MR);
        match &self.data {
            TileData::F32(d) => (0..self.k)
                .map(|kk| d[t * self.k * MR + kk * MR + i])
                .collect(),
            TileData::Bf16(d) => {
                let pairs = self.k.div_ceil(2);
                (0..self.k)
                    .map(|kk| {
                        let pair = d[t * pairs * MR + (kk / 2) * MR + i];
                        f32::from_bits(((pair >> (16 * (kk % 2))) & 0xFFFF) << 16)
                    })
                    .collect()
            }
        }
    }
}

impl Drop for RowTiles {
    fn drop(&mut self) {
        match &mut self.data {
            TileData::F32(d) => SCRATCH_F32.put(std::mem::take(d)),
            TileData::Bf16(d) => SCRATCH_U32.put(std::mem::take(d)),
        }
    }
}

/// `a` `[m, k]` (through the prologue, if any) as row tiles for the f32 tiles: tile `t` holds rows `8t..8t+8` as
/// `[k, 8]` (rows past `m` zero), so a tile reads one contiguous stream instead of eight rows `k` apart.
fn pack_rows_f32(a: &[f32], m: usize, k: usize, ln: Option<LnRows>) -> Vec<f32> {
    let mut out = SCRATCH_F32.take(m.div_ceil(MR) * k * MR);
    out.par_chunks_mut(k * MR).enumerate().for_each_init(
        // The tile's rows after the prologue (or zero rows past `m`).
        || vec![0f32; MR * k],
        |tmp, (t, dst)| {
            let rows = MR.min(m - t * MR);
            for r in 0..MR {
                let row = &mut tmp[r * k..][..k];
                if r >= rows {
                    row.fill(0.0);
                } else if let Some(ln) = ln {
                    ln.apply(t * MR + r, &a[(t * MR + r) * k..][..k], row);
                }
            }
            let src: [&[f32]; MR] = std::array::from_fn(|r| {
                if r < rows && ln.is_none() {
                    &a[(t * MR + r) * k..][..k]
                } else {
                    &tmp[r * k..][..k]
                }
            });
            transpose_rows(src, dst);
        },
    );
    out
}

/// `dst[kk * 8 + r] = rows[r][kk]`: eight rows of 32-bit values (f32, or bf16 pairs as their bits) as one row
/// tile, 16 depths at a time with [`avx512::transpose_8x16`] where the CPU has AVX-512, else 8 at a time with
/// [`avx2::transpose_8x8`] where it has AVX.
fn transpose_rows<T: Copy>(rows: [&[T]; MR], dst: &mut [T]) {
    const { assert!(std::mem::size_of::<T>() == 4) };
    let k = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == k) && dst.len() == k * MR);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        while done + 16 <= k {
            // SAFETY: AVX-512F is present (just detected); each row holds 16 values from `done` and
            // `dst` 128 from `done * MR` (the lengths asserted above); 4-byte values move as f32 bits.
            unsafe {
                avx512::transpose_8x16(
                    rows.map(|r| r.as_ptr().add(done).cast::<f32>()),
                    dst.as_mut_ptr().add(done * MR).cast::<f32>(),
                )
            };
            done += 16;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        while done + 8 <= k {
            // SAFETY: AVX is present; each row holds 8 values from `done`, `dst` 64 from `done * MR`.
            unsafe {
                avx2::transpose_8x8(
                    rows.map(|r| r.as_ptr().add(done).cast::<f32>()),
                    dst.as_mut_ptr().add(done * MR).cast::<f32>(),
                )
            };
            done += 8;
        }
    }
    for kk in done..k {
        for (r, row) in rows.iter().enumerate() {
            dst[kk * MR + r] = row[kk];
        }
    }
}

/// `a` `[m, k]` (through the prologue, if any) rounded to bf16 as row tiles for the bf16 tiles: tile `t` holds
/// rows `8t..8t+8` as `[k/2, 8, 2]` (each row's depth pair side by side, one `u32`; the odd pad and rows past `m`
/// zero).
fn pack_rows_bf16(a: &[f32], m: usize, k: usize, ln: Option<LnRows>) -> Vec<u32> {
    let pairs = k.div_ceil(2);
    let mut out = SCRATCH_U32.take(m.div_ceil(MR) * pairs * MR);
    out.par_chunks_mut(pairs * MR).enumerate().for_each_init(
        || {
            (
                // The tile's rows as bf16 pairs (`u32`, low half first: the order in memory).
                vec![0u32; MR * pairs],
                vec![0f32; if ln.is_some() { k } else { 0 }],
            )
        },
        |(bits, tmp), (t, dst)| {
            let rows = MR.min(m - t * MR);
            for r in 0..MR {
                let row = &mut bits[r * pairs..][..pairs];
                if r >= rows {
                    row.fill(0);
                    continue;
                }
                let mut src = &a[(t * MR + r) * k..][..k];
                if let Some(ln) = ln {
                    ln.apply(t * MR + r, src, tmp);
                    src = tmp;
                }
                // The odd pad: the last pair's high half is zero.
                row[pairs - 1] = 0;
                // SAFETY: the bf16 format exists only where `pack` saw AVX512-BF16; `row` holds 2 * pairs >= k
                // bf16 values.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx512::to_bf16(src.as_ptr(), row.as_mut_ptr().cast::<u16>(), k)
                };
            }
            let src: [&[u32]; MR] = std::array::from_fn(|r| &bits[r * pairs..][..pairs]);
            transpose_rows(src, dst);
        },
    );
    out
}

/// `a` `[m, k]` (through the prologue, if any) rounded to bf16 for the AMX tiles, as `u32` pairs from the returned
/// offset on (the first line boundary of the buffer): per 16-row tile
/// and 32-deep step one contiguous `16 x 32` tile ([`amx::row_index`]), `k` zero-padded to `kp` (whole steps) and
/// `m` with zero rows to whole tiles. Each row is rounded into a buffer and then scattered by steps (64-byte
/// copies), one task per tile.
#[cfg(target_arch = "x86_64")]
fn pack_rows_amx(
    a: &[f32],
    m: usize,
    k: usize,
    kp: usize,
    ln: Option<LnRows>,
) -> (Vec<u32>, usize) {
    let len = m.div_ceil(amx::TM) * amx::TM * kp / 2;
    // A line more than needed, so that the tiles can start on a line ([`super::aligned`]: misaligned tile loads
    // are several times slower); `off` u32 in.
    let mut out = SCRATCH_U32.take(len + 16);
    let off = (64 - out.as_ptr() as usize % 64) % 64 / 4;
    out[off..off + len]
        .par_chunks_mut(amx::TM * kp / 2)
        .enumerate()
        .for_each_init(
            || (vec![0f32; if ln.is_some() { k } else { 0 }], vec![0u16; kp]),
            |(tmp, row), (t, tile)| {
                // SAFETY: `u32` to its two `u16` halves: same size and alignment rules met, no invalid values.
                let tile = unsafe {
                    std::slice::from_raw_parts_mut(tile.as_mut_ptr().cast::<u16>(), tile.len() * 2)
                };
                for rr in 0..amx::TM {
                    let r = t * amx::TM + rr;
                    if r >= m {
                        row.fill(0);
                    } else {
                        let mut src = &a[r * k..][..k];
                        if let Some(ln) = ln {
                            ln.apply(r, src, tmp);
                            src = tmp;
                        }
                        row[k..].fill(0);
                        // SAFETY: AMX layers exist only where AVX512-BF16 is present (`amx::available`); `row`
                        // holds `kp >= k` bf16 values.
                        unsafe { avx512::to_bf16(src.as_ptr(), row.as_mut_ptr(), k) };
                    }
                    for (step, chunk) in row.chunks_exact(amx::TK).enumerate() {
                        let at = amx::row_index(rr, step * amx::TK, kp);
                        tile[at..][..amx::TK].copy_from_slice(chunk);
                    }
                }
            },
        );
    (out, off)
}

/// Buffers for the packed activations, kept between products so that the next one does not fault fresh pages
/// in (a batch-8 DiT-B product packs up to 25 MB).
pub(super) struct Scratch<T>(Mutex<Vec<Vec<T>>>);

static SCRATCH_F32: Scratch<f32> = Scratch(Mutex::new(Vec::new()));
static SCRATCH_U32: Scratch<u32> = Scratch(Mutex::new(Vec::new()));

/// Buffers for the intermediate activations of the fused block (qkv, attention, MLP hidden), for the same reason:
/// a fresh 25 MB allocation per product is a fresh mapping, and the kernel zeroing its pages showed as 3-4 % of
/// the batch-8 forward (`perf`: page faults, `clear_page`); reusing them made the 25 MB-output mlp-in product
/// 1.5x faster in bf16 (docs/benchmarks.md).
pub(super) static BUFFERS: Scratch<f32> = Scratch(Mutex::new(Vec::new()));

/// Buffers kept per pool, and the largest kept (elements): what a forward needs at once, without holding on to
/// the memory of an unusually large batch.
const POOL_BUFFERS: usize = 6;
const POOL_MAX_ELEMS: usize = 128 << 20;

impl<T: Copy + Default> Scratch<T> {
    /// An empty buffer with capacity for `len` elements if the pool has one (the smallest such), otherwise its
    /// largest (grown by the caller).
    pub(super) fn take_empty(&self, len: usize) -> Vec<T> {
        let mut v = self.pick(len);
        v.clear();
        v
    }

    /// The pool's best buffer for `len` elements, as it was put back: the smallest already holding `len`
    /// elements (nothing to initialise), else the smallest with room for them, else the largest. (Taking the
    /// smallest by capacity alone often picked a large buffer last cut short by a smaller product, and growing it
    /// back memset up to 2.4 MB: 0.7 % of the default model's forward in `perf`.)
    fn pick(&self, len: usize) -> Vec<T> {
        match self.0.lock() {
            Ok(mut pool) => {
                let fit = (0..pool.len())
                    .filter(|&i| pool[i].capacity() >= len)
                    .min_by_key(|&i| (pool[i].len() < len, pool[i].capacity()))
                    .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
                fit.map(|i| pool.swap_remove(i)).unwrap_or_default()
            }
            Err(_) => Vec::new(),
        }
    }

    /// A buffer of `len` elements (contents unspecified: the packers write every element; only growth is
    /// initialised).
    pub(super) fn take(&self, len: usize) -> Vec<T> {
        let mut v = self.pick(len);
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, T::default());
        }
        v
    }

    /// Returns a buffer to the pool (at most [`POOL_BUFFERS`] are kept, the largest first).
    pub(super) fn put(&self, v: Vec<T>) {
        if v.capacity() == 0 || v.capacity() > POOL_MAX_ELEMS {
            return;
        }
        if let Ok(mut pool) = self.0.lock() {
            pool.push(v);
            if pool.len() > POOL_BUFFERS {
                if let Some(i) = (0..pool.len()).min_by_key(|&i| pool[i].capacity()) {
                    pool.swap_remove(i);
                }
            }
        }
    }
}

/// The `part`-th of `parts` near-equal ranges of `0..total`.
fn split(total: usize, parts: usize, part: usize) -> (usize, usize) {
    (total * part / parts, total * (part + 1) / parts)
}

/// The tile's view of the epilogue: its residual and gate pointers.
fn tile_epilogue(epi: Epilogue, r0: usize, rows: usize, col0: usize, n: usize) -> TileEpilogue {
    match epi {
        Epilogue::Bias => TileEpilogue::Bias,
        Epilogue::BiasGelu => TileEpilogue::BiasGelu,
        Epilogue::GatedResidual {
            residual,
            gate,
            gate_stride,
            rows_per_gate,
        } => {
            let mut gate_rows = [0; MR];
            for (r, g) in gate_rows.iter_mut().enumerate().take(rows) {
                *g = ((r0 + r) / rows_per_gate) * gate_stride;
            }
            TileEpilogue::GatedResidual {
                // In bounds: `forward` checked the residual and gate extents.
                residual: residual[r0 * n + col0..].as_ptr(),
                gate: gate[col0..].as_ptr(),
                gate_rows,
            }
        }
    }
}

/// The epilogue as a pass over a finished `[m, n]` product (the portable path).
fn portable_epilogue(out: &mut [f32], n: usize, bias: &[f32], epi: Epilogue) {
    out.par_chunks_mut(n)
        .enumerate()
        .for_each(|(row, y)| match epi {
            Epilogue::Bias => y.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
            Epilogue::BiasGelu => y
                .iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v = gelu_tanh(*v + b)),
            Epilogue::GatedResidual {
                residual,
                gate,
                gate_stride,
                rows_per_gate,
            } => {
                let g = &gate[(row / rows_per_gate) * gate_stride..][..n];
                let r = &residual[row * n..][..n];
                for j in 0..n {
                    y[j] = r[j] + g[j] * (y[j] + bias[j]);
                }
            }
        });
}

/// The output pointer shared by the tile tasks (each writes its own tiles).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `dst[m, n] = lhs · rhs` with the `gemm` crate: `dst` row-major with row stride `ldd`, each operand as
/// `(pointer, column stride, row stride)` in elements (the portable products and the portable attention).
///
/// # Safety
/// Every element the strides address lies inside its buffer; `dst` is writable.
pub(super) unsafe fn gemm_rows(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    ldd: usize,
    (lhs, lhs_cs, lhs_rs): (*const f32, isize, isize),
    (rhs, rhs_cs, rhs_rs): (*const f32, isize, isize),
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldd as isize,
        false,
        lhs,
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        0.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// [`avx512::tile_f32`] for `rows` in 1..=8.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32_dyn(
    rows: usize,
    k: usize,
    a: *const f32,
    w: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: TileEpilogue,
    next: Ahead,
) {
    avx512::by_rows!(rows, tile_f32, k, a, w, bias, c, ldc, cols, epi, next)
}

/// [`avx512::tile_bf16`] for `rows` in 1..=8.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16_dyn(
    rows: usize,
    pairs: usize,
    strides: (usize, usize),
    a: *const u16,
    w: *const u16,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: TileEpilogue,
    next: Ahead,
) {
    avx512::by_rows!(rows, tile_bf16, pairs, strides, a, w, bias, c, ldc, cols, epi, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|k| {
                ((k as f64 * 0.754_877_666 + seed as f64 * 0.569_840_29).fract() * 2.0 - 1.0) as f32
            })
            .collect()
    }

    /// f64 reference of `epilogue(a W + b)`.
    fn reference(
        a: &[f32],
        w: &[f32],
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
        epi: Epilogue,
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for kk in 0..k {
                    s += f64::from(a[i * k + kk]) * f64::from(w[kk * n + j]);
                }
                let x = (s + f64::from(b[j])) as f32;
                out[i * n + j] = match epi {
                    Epilogue::Bias => x,
                    Epilogue::BiasGelu => {
                        let x = f64::from(x);
                        (0.5 * x
                            * (1.0
                                + ((2.0 / std::f64::consts::PI).sqrt()
                                    * (x + 0.044715 * x * x * x))
                                    .tanh())) as f32
                    }
                    Epilogue::GatedResidual {
                        residual,
                        gate,
                        gate_stride,
                        rows_per_gate,
                    } => residual[i * n + j] + gate[(i / rows_per_gate) * gate_stride + j] * x,
                };
            }
        }
        out
    }

    fn kernels_here() -> Vec<CpuKernels> {
        let mut ks = vec![CpuKernels::Portable];
        if CpuKernels::Blas.supported() {
            ks.push(CpuKernels::Blas);
        }
        if let d @ CpuKernels::Avx512 { .. } = CpuKernels::detect() {
            ks.push(d);
        }
        if CpuKernels::Avx2.supported() {
            ks.push(CpuKernels::Avx2);
        }
        ks
    }

    #[test]
    fn products_and_epilogues_match_f64() {
        // Odd sizes: row tails (m % 8), column tails (n % 48), odd depth (bf16 pair padding).
        // 40 x 100 x 97: an AMX block of 32 rows, then one of 16 with 8 used; gate rows that change inside a block.
        for &(m, k, n) in &[
            (1, 5, 3),
            (9, 33, 50),
            (17, 64, 96),
            (2, 7, 145),
            (40, 100, 97),
            (10, 300, 60),
        ] {
            let a = rand(m * k, 1);
            let w = rand(k * n, 2);
            let b = rand(n, 3);
            let tokens = 3;
            let stride = 2 * n + 1;
            let residual = rand(m * n, 4);
            let gate = rand(m.div_ceil(tokens) * stride, 5);
            let epis = [
                Epilogue::Bias,
                Epilogue::BiasGelu,
                Epilogue::GatedResidual {
                    residual: &residual,
                    gate: &gate,
                    gate_stride: stride,
                    rows_per_gate: tokens,
                },
            ];
            for kernels in kernels_here() {
                let mut formats = vec![(WeightFormat::F32, Bf16Products::Widen)];
                if kernels.has_bf16() {
                    for products in [Bf16Products::Widen, Bf16Products::Dot, Bf16Products::Amx] {
                        if products.supported() {
                            formats.push((WeightFormat::Bf16, products));
                        }
                    }
                }
                for (format, products) in formats {
                    let layer =
                        PackedLinear::pack_with(&w, &b, k, n, format, kernels, products).unwrap();
                    // The stored kernel round-trips exactly (f32) or as bf16 values.
                    let stored = layer.unpack();
                    for (s, v) in stored.iter().zip(&w) {
                        let tol = if format == WeightFormat::F32 {
                            0.0
                        } else {
                            v.abs() / 128.0
                        };
                        assert!(
                            (s - v).abs() <= tol,
                            "{kernels:?} {format:?}: stored {s} for {v}"
                        );
                    }
                    for epi in epis {
                        let got = layer.forward(&a, m, epi).unwrap();
                        // bf16 dot products round the inputs too: compare against the stored weights and
                        // rounded inputs (widened products keep the f32 inputs).
                        let (a_ref, tol) = match (format, products) {
                            (WeightFormat::F32, _) | (WeightFormat::Bf16, Bf16Products::Widen) => {
                                (a.clone(), 1e-5)
                            }
                            (WeightFormat::Bf16, Bf16Products::Dot | Bf16Products::Amx) => (
                                a.iter()
                                    .map(|&x| f32::from_bits(u32::from(avx512::bf16_bits(x)) << 16))
                                    .collect(),
                                1e-4,
                            ),
                        };
                        let want = reference(&a_ref, &stored, &b, m, k, n, epi);
                        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - r).abs() <= tol * (1.0 + r.abs()) * (k as f32).sqrt(),
                                "{kernels:?} {format:?} {products:?} {epi:?} [{m}x{k}x{n}] element {i}: {g} vs {r}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn avx2_sub_tiles_give_the_avx512_tiles_bits() {
        let avx512 = CpuKernels::Avx512 { bf16: false };
        if !(avx512.supported() && CpuKernels::Avx2.supported()) {
            return;
        }
        // m = 19: a 3-row tail (one sub-tile row block, partly); n = 101: a 5-column last panel; k = 300: a depth
        // past the prefetch distance.
        for k in [37, 300] {
            avx2_matches_avx512(avx512, 19, k, 101);
        }
    }

    fn avx2_matches_avx512(avx512: CpuKernels, m: usize, k: usize, n: usize) {
        let (a, w, b) = (rand(m * k, 41), rand(k * n, 42), rand(n, 43));
        let (residual, gate) = (rand(m * n, 44), rand(2 * n, 45));
        let modulation = rand(2 * 3 * k, 46);
        let ln = LnRows {
            shift: &modulation,
            scale: &modulation[k..],
            stride: 3 * k,
            rows_per_sample: 10,
        };
        let gated = Epilogue::GatedResidual {
            residual: &residual,
            gate: &gate,
            gate_stride: n,
            rows_per_gate: 10,
        };
        let pack = |kernels| PackedLinear::pack(&w, &b, k, n, WeightFormat::F32, kernels).unwrap();
        let (wide, narrow) = (pack(avx512), pack(CpuKernels::Avx2));
        for epi in [Epilogue::Bias, Epilogue::BiasGelu, gated] {
            assert_eq!(
                narrow.forward(&a, m, epi).unwrap(),
                wide.forward(&a, m, epi).unwrap(),
                "{epi:?}"
            );
        }
        for epi in [Epilogue::Bias, Epilogue::BiasGelu] {
            let got = narrow.forward_ln_to_tiles(&a, m, ln, epi).unwrap();
            let want = wide.forward_ln_to_tiles(&a, m, ln, epi).unwrap();
            assert_eq!(got.data, want.data, "row tiles, {epi:?}");
        }
    }

    #[test]
    fn the_tile_ceiling_runs_where_the_tiles_do() {
        assert_eq!(tile_ceiling(CpuKernels::Portable, 3), None);
        assert_eq!(tile_ceiling(CpuKernels::Blas, 3), None);
        for kernels in [CpuKernels::Avx512 { bf16: false }, CpuKernels::Avx2] {
            let got = tile_ceiling(kernels, 3);
            assert_eq!(
                got.is_some(),
                cfg!(target_arch = "x86_64") && kernels.supported(),
                "{kernels:?}"
            );
            if let Some(flop) = got {
                assert_eq!(flop, (2 * 3 * CEILING_DEPTH * MR * NR) as f64);
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_bf16_probe_measures_where_the_instructions_exist() {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let dot = std::arch::is_x86_feature_detected!("avx512bf16");
        // 1000 rounds of 16 chains of 16 lanes: 2 FLOP per FMA lane, 4 per bf16 pair.
        assert_eq!(arithmetic_chains(false, 1000), avx512.then_some(512_000.0));
        assert_eq!(arithmetic_chains(true, 1000), dot.then_some(1_024_000.0));
        if dot {
            let r = dot_over_fma_rate();
            assert!(r.is_finite() && r > 0.05 && r < 20.0, "dot / FMA rate {r}");
        }
        // What was chosen is runnable here, and names itself.
        let chosen = Bf16Products::detect();
        assert!(chosen.supported() || !avx512, "{chosen:?}");
        assert!(chosen.name().contains("bf16"));
        assert_eq!(Bf16Products::Dot.supported(), dot && avx512);
    }

    #[test]
    fn layernorm_prologue_matches_a_separate_pass() {
        // 2 samples of 5 rows, modulation rows of stride 3k with shift at 0 and scale at k.
        let (m, k, n, rows) = (10, 40, 50, 5);
        let x = rand(m * k, 7);
        let modulation = rand(2 * 3 * k, 8);
        let w = rand(k * n, 9);
        let b = rand(n, 10);
        let ln = LnRows {
            shift: &modulation,
            scale: &modulation[k..],
            stride: 3 * k,
            rows_per_sample: rows,
        };
        let mut normed = vec![0f32; m * k];
        for r in 0..m {
            ln.apply(r, &x[r * k..][..k], &mut normed[r * k..][..k]);
        }
        for kernels in kernels_here() {
            let mut layers =
                vec![PackedLinear::pack(&w, &b, k, n, WeightFormat::F32, kernels).unwrap()];
            if kernels.has_bf16() && Bf16Products::Amx.supported() {
                // The prologue goes through the AMX rows' packing too.
                let products = Bf16Products::Amx;
                layers.push(
                    PackedLinear::pack_with(&w, &b, k, n, WeightFormat::Bf16, kernels, products)
                        .unwrap(),
                );
            }
            for layer in &layers {
                let want = layer.forward(&normed, m, Epilogue::BiasGelu).unwrap();
                let got = layer.forward_ln(&x, m, ln, Epilogue::BiasGelu).unwrap();
                assert_eq!(got, want, "{kernels:?} {:?}", layer.bf16_products());
            }
            let layer = &layers[0];
            let short = LnRows {
                shift: &modulation[..3 * k],
                ..ln
            };
            assert!(layer.forward_ln(&x, m, short, Epilogue::Bias).is_err());
        }
    }

    #[test]
    fn row_tiles_are_the_transposed_rows() {
        // 37 = two 16-deep blocks (the AVX-512 transpose, where present) and a scalar tail.
        let k = 37;
        let rows: Vec<Vec<u32>> = (0..MR)
            .map(|r| (0..k).map(|kk| (r * 1000 + kk) as u32).collect())
            .collect();
        let mut dst = vec![0u32; k * MR];
        transpose_rows(std::array::from_fn(|r| &rows[r][..]), &mut dst);
        for kk in 0..k {
            for r in 0..MR {
                assert_eq!(dst[kk * MR + r], rows[r][kk], "depth {kk} row {r}");
            }
        }
        let fl: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| r.iter().map(|&v| v as f32 - 0.5).collect())
            .collect();
        let mut out = vec![0f32; k * MR];
        transpose_rows(std::array::from_fn(|r| &fl[r][..]), &mut out);
        assert_eq!(out[5 * MR + 3], fl[3][5]);
        assert_eq!(out[36 * MR + 7], fl[7][36]);
    }

    #[test]
    fn row_tiles_handed_between_layers_match_the_row_major_chain() {
        // m = 19: a 3-row tail tile; n1 = 101: a 5-column last panel (an odd depth pair) for the hand-over.
        let (m, k, n1, n2) = (19, 40, 101, 50);
        let x = rand(m * k, 21);
        let modulation = rand(2 * 3 * k, 22);
        let ln = LnRows {
            shift: &modulation,
            scale: &modulation[k..],
            stride: 3 * k,
            rows_per_sample: 10,
        };
        let (w1, b1) = (rand(k * n1, 23), rand(n1, 24));
        let (w2, b2) = (rand(n1 * n2, 25), rand(n2, 26));
        let residual = rand(m * n2, 27);
        let gate = rand(2 * n2, 28);
        let gated = Epilogue::GatedResidual {
            residual: &residual,
            gate: &gate,
            gate_stride: n2,
            rows_per_gate: 10,
        };
        let mut layers = Vec::new();
        for kernels in kernels_here() {
            layers.push((kernels, WeightFormat::F32, Bf16Products::Widen));
            if kernels.has_bf16() {
                for products in [Bf16Products::Widen, Bf16Products::Dot] {
                    if products.supported() {
                        layers.push((kernels, WeightFormat::Bf16, products));
                    }
                }
            }
        }
        for (kernels, format, products) in layers {
            let pack = |w: &[f32], b: &[f32], k, n| {
                PackedLinear::pack_with(w, b, k, n, format, kernels, products).unwrap()
            };
            let (l1, l2) = (pack(&w1, &b1, k, n1), pack(&w2, &b2, n1, n2));
            // f32 and widened bf16 layers exchange f32 row tiles, `vdpbf16ps` ones bf16 pairs.
            let expected = match (kernels, format, products) {
                (CpuKernels::Avx512 { .. } | CpuKernels::Avx2, WeightFormat::F32, _)
                | (CpuKernels::Avx512 { .. }, WeightFormat::Bf16, Bf16Products::Widen) => {
                    Some(RowTileFormat::F32)
                }
                (CpuKernels::Avx512 { .. }, WeightFormat::Bf16, Bf16Products::Dot) => {
                    Some(RowTileFormat::Bf16Pairs)
                }
                _ => None,
            };
            assert_eq!(
                l1.row_tiles(),
                expected,
                "{kernels:?} {format:?} {products:?}"
            );
            let u = l1.forward_ln(&x, m, ln, Epilogue::BiasGelu).unwrap();
            let want = l2.forward(&u, m, gated).unwrap();
            if l1.row_tiles().is_none() {
                assert!(l1
                    .forward_ln_to_tiles(&x, m, ln, Epilogue::BiasGelu)
                    .is_err());
                continue;
            }
            let tiles = l1
                .forward_ln_to_tiles(&x, m, ln, Epilogue::BiasGelu)
                .unwrap();
            for r in [0, 7, 8, 18] {
                let row = &u[r * n1..][..n1];
                let want_row: Vec<f32> = match expected {
                    // The pairs hold the row-major output rounded as the next layer's packing rounds it.
                    Some(RowTileFormat::Bf16Pairs) => row
                        .iter()
                        .map(|&x| f32::from_bits(u32::from(avx512::bf16_bits(x)) << 16))
                        .collect(),
                    _ => row.to_vec(),
                };
                assert_eq!(tiles.row(r), want_row, "row {r}");
            }
            if expected == Some(RowTileFormat::Bf16Pairs) {
                // Rows past m and the odd column's partner are zero.
                let TileData::Bf16(d) = &tiles.data else {
                    unreachable!()
                };
                let pairs = n1.div_ceil(2);
                assert_eq!(d.len(), m.div_ceil(MR) * pairs * MR);
                for p in 0..pairs {
                    for r in m % MR..MR {
                        assert_eq!(d[(m / MR) * pairs * MR + p * MR + r], 0, "pad row {r}");
                    }
                }
                for r in 0..m {
                    assert_eq!(
                        d[(r / MR) * pairs * MR + (pairs - 1) * MR + r % MR] >> 16,
                        0
                    );
                }
                // f32 row tiles are not bf16 pairs.
                let f32_layer =
                    PackedLinear::pack(&w2, &b2, n1, n2, WeightFormat::F32, kernels).unwrap();
                assert!(f32_layer.forward_tiles(&tiles, gated).is_err());
            }
            assert_eq!(
                l2.forward_tiles(&tiles, gated).unwrap(),
                want,
                "{kernels:?} {format:?} {products:?}"
            );
            // Shapes and epilogues that cannot be exchanged.
            assert!(l1.forward_tiles(&tiles, Epilogue::Bias).is_err());
            assert!(l1.forward_ln_to_tiles(&x, m, ln, gated).is_err());
        }
    }

    #[test]
    fn pool_hands_out_the_smallest_fitting_buffer_and_stays_bounded() {
        let pool: Scratch<f32> = Scratch(Mutex::new(Vec::new()));
        for cap in [100, 10, 1000] {
            pool.put(Vec::with_capacity(cap));
        }
        let v = pool.take_empty(50);
        assert!(v.is_empty() && v.capacity() >= 100 && v.capacity() < 1000);
        // Nothing fits: the largest, to be grown.
        assert!(pool.take_empty(5000).capacity() >= 1000);
        // `take` keeps the old contents' initialisation, only sized to `len`.
        pool.put(vec![7.0; 20]);
        assert_eq!(pool.take(8).len(), 8);
        // A buffer already holding the elements wins over a smaller-capacity one that would have to grow.
        let pool: Scratch<f32> = Scratch(Mutex::new(Vec::new()));
        let mut cut = vec![1.0f32; 600];
        cut.truncate(10);
        pool.put(cut);
        pool.put(vec![3.0f32; 800]);
        let v = pool.take(500);
        assert_eq!((v.len(), v[499]), (500, 3.0));
        let v = pool.take(500); // only the cut one is left: grown, zeros past its 10
        assert_eq!((v.len(), v[9], v[10]), (500, 1.0, 0.0));
        for _ in 0..3 * POOL_BUFFERS {
            pool.put(Vec::with_capacity(64));
        }
        pool.put(Vec::new());
        assert_eq!(pool.0.lock().unwrap().len(), POOL_BUFFERS);
    }

    #[test]
    fn products_into_a_reused_buffer_match_fresh_ones() {
        let (m, k, n) = (19, 70, 100);
        let a = rand(m * k, 11);
        let w = rand(k * n, 12);
        let b = rand(n, 13);
        for kernels in kernels_here() {
            let layer = PackedLinear::pack(&w, &b, k, n, WeightFormat::F32, kernels).unwrap();
            let fresh = layer.forward(&a, m, Epilogue::BiasGelu).unwrap();
            // A dirty buffer, longer than the product.
            let mut out = vec![f32::NAN; 3 * m * n];
            layer
                .forward_into(&a, m, Epilogue::BiasGelu, &mut out)
                .unwrap();
            assert_eq!(out, fresh, "{kernels:?}");
        }
    }

    #[test]
    fn bad_extents_are_errors() {
        let w = rand(12, 1);
        assert!(
            PackedLinear::pack(&w, &[0.0; 4], 3, 5, WeightFormat::F32, CpuKernels::Portable)
                .is_err()
        );
        let layer =
            PackedLinear::pack(&w, &[0.0; 4], 3, 4, WeightFormat::F32, CpuKernels::detect())
                .unwrap();
        assert!(layer.forward(&[0.0; 7], 2, Epilogue::Bias).is_err());
        let short = [0.0; 4];
        let epi = Epilogue::GatedResidual {
            residual: &short,
            gate: &short,
            gate_stride: 4,
            rows_per_gate: 1,
        };
        assert!(layer.forward(&[0.0; 6], 2, epi).is_err());
        assert!(PackedLinear::pack(
            &w,
            &[0.0; 4],
            3,
            4,
            WeightFormat::Bf16,
            CpuKernels::Portable
        )
        .is_err());
    }
}
