//! The AVX-512 micro-kernels behind [`super::packed`]: one `R x NR` tile of `C = A W` over the whole depth `K` with
//! the accumulators in registers (`R <= MR` rows of `NV` 16-lane vectors: 8 x 3 = 24 accumulators), then the layer's
//! epilogue (bias, tanh-GELU or gated residual) applied in registers before the one store.
//!
//! Three tiles: f32 (`vfmadd231ps`, one broadcast row element per FMA), bf16 (`vdpbf16ps`: each f32 lane gains
//! `a[k] w[k][j] + a[k+1] w[k+1][j]`, a bf16 pair of `A` broadcast against a panel whose rows come in interleaved
//! pairs; f32 accumulation); for CPUs where `vdpbf16ps` is slow, the bf16 panels are widened to f32 panels
//! ([`widen_bf16_panel`]) for the f32 tile. Written here rather than taken from a crate because neither the `gemm` crate nor candle
//! has a bf16 dot-product kernel, and because packing the weights once at load and fusing the epilogue is where the
//! measured time went (docs/benchmarks.md): the `gemm` crate packs the right-hand side on every call and returns
//! before any element-wise work.
//!
//! Every function here is `unsafe`: the caller ([`super::packed`]) checks the CPU features at run time and passes
//! pointers whose extents it has checked.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// 16-lane vectors per tile row.
const NV: usize = 3;
/// Columns per packed panel.
pub const NR: usize = 16 * NV;
/// Rows per tile (`MR x NV` accumulators plus `NV` panel vectors and a broadcast fit the 32 registers).
pub const MR: usize = 8;
/// How far ahead (in panel elements: 48 depth rows, 9 KB of f32) the panel is prefetched: 16 rows left the
/// memory-bound adaLN products 10-15 % slower (`odelt-bench gemm`, weights cycled past the L3).
const PF: usize = NR * 48;

/// Calls the tile `avx512::$f::<R>` with the run-time row count `rows` (1..=8) as the const `R`.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($rows:expr, $f:ident, $($arg:expr),*) => {
        match $rows {
            8 => $crate::model::avx512::$f::<8>($($arg),*),
            7 => $crate::model::avx512::$f::<7>($($arg),*),
            6 => $crate::model::avx512::$f::<6>($($arg),*),
            5 => $crate::model::avx512::$f::<5>($($arg),*),
            4 => $crate::model::avx512::$f::<4>($($arg),*),
            3 => $crate::model::avx512::$f::<3>($($arg),*),
            2 => $crate::model::avx512::$f::<2>($($arg),*),
            _ => $crate::model::avx512::$f::<1>($($arg),*),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(super) use by_rows;

/// Where a tile's result goes and what is applied to it first. Pointers are to the tile's top-left element of
/// the respective `[M, N]` (row stride `ldc`) or `[samples, ..]` arrays.
#[derive(Clone, Copy)]
pub enum TileEpilogue {
    /// `c = acc + bias`
    Bias,
    /// `c = gelu_tanh(acc + bias)`
    BiasGelu,
    /// `c = residual + gate[sample(row)] * (acc + bias)`; `gate` points at the tile's columns of row 0's gate,
    /// `gate_rows[r]` is the offset (in elements) of row r's gate row.
    GatedResidual {
        residual: *const f32,
        gate: *const f32,
        gate_rows: [usize; MR],
    },
    /// `acc + bias` (tanh-GELU'd if `gelu`) stored as a row tile of the next product's input (the layout of
    /// [`super::packed`]'s packed rows: `[depth, 8]`): `c` points at depth `col0` of the tile's block, the tile's
    /// columns are the next product's depths, and rows past `R` are written as zeros.
    Tiles { gelu: bool },
    /// `acc + bias` (tanh-GELU'd if `gelu`) rounded to bf16 and stored as a row tile of the next `vdpbf16ps`
    /// product's input (`[pairs, 8]` bf16 pairs, the layout [`tile_bf16`] reads): `c` points (cast from the
    /// `u32` pairs) at pair `col0 / 2` of the tile's block, pairs past the valid columns are not written, rows
    /// past `R` are written as zeros, an odd last column pairs with a zero.
    PairTiles { gelu: bool },
}

/// Cache lines a tile prefetches into L2 besides its own panel, one per depth step: its share of the next panel
/// the task will multiply, so that the first tile of that panel does not wait on L3 or memory (1-5 % on the
/// batch-1 DiT-B products, interleaved A/B in docs/benchmarks.md). `ptr` must point into (or `lines` lines before
/// the end of) an allocation; prefetches do not fault, but they should not wander.
#[derive(Clone, Copy)]
pub struct Ahead {
    pub ptr: *const i8,
    pub lines: usize,
}

impl Ahead {
    pub const NONE: Ahead = Ahead {
        ptr: std::ptr::null(),
        lines: 0,
    };
}

/// The mask of the first `n` (0..=16) lanes of a 16-lane vector.
#[inline(always)]
fn lane_mask(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

/// The masks of the `V` column vectors of a block with `cols` valid columns.
#[inline(always)]
fn masks<const V: usize>(cols: usize) -> [u16; V] {
    std::array::from_fn(|v| lane_mask(cols.saturating_sub(16 * v)))
}

#[cfg(target_arch = "x86_64")]
/// `exp(z)` on 16 lanes: the Cody-Waite reduction and degree-7 Taylor polynomial of the scalar `exp_f32` of
/// `fused.rs`, with fused multiply-adds (about one ulp from the scalar path, which the x86-64 baseline cannot
/// fuse): 12 vector operations fewer per 16 values, where the softmax spent a fifth of attention.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp16(z: __m512) -> __m512 {
    let z = _mm512_min_ps(
        _mm512_max_ps(z, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let round = _mm512_set1_ps(12_582_912.0);
    let t = _mm512_fmadd_ps(z, _mm512_set1_ps(std::f32::consts::LOG2_E), round);
    let n = _mm512_sub_ps(t, round);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), z);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for k in [720.0f32, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.0 / k));
    }
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_sub_epi32(
            _mm512_castps_si512(t),
            _mm512_set1_epi32(12_582_912f32.to_bits() as i32),
        ),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(p, _mm512_castsi512_ps(bits))
}

#[cfg(target_arch = "x86_64")]
/// `x <- exp(x - max(x))` over `n` values at `x`, returning their sum: the softmax numerators of one row.
///
/// # Safety
/// AVX-512F present; `x` readable and writable for `n` values.
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_shifted(x: *mut f32, n: usize) -> f32 {
    let full = n / 16 * 16;
    let tail = lane_mask(n % 16);
    let lowest = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut m = lowest;
    for i in (0..full).step_by(16) {
        m = _mm512_max_ps(m, _mm512_loadu_ps(x.add(i)));
    }
    m = _mm512_max_ps(m, _mm512_mask_loadu_ps(lowest, tail, x.add(full)));
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    let mut sum = _mm512_setzero_ps();
    for i in (0..full).step_by(16) {
        let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x.add(i)), max));
        _mm512_storeu_ps(x.add(i), e);
        sum = _mm512_add_ps(sum, e);
    }
    if tail != 0 {
        let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x.add(full)), max));
        _mm512_mask_storeu_ps(x.add(full), tail, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, e));
    }
    _mm512_reduce_add_ps(sum)
}

#[cfg(target_arch = "x86_64")]
/// tanh-GELU on 16 lanes, as the scalar `gelu_tanh`: `x / (1 + exp(-2u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gelu16(x: __m512) -> __m512 {
    let x2 = _mm512_mul_ps(x, x);
    let u = _mm512_mul_ps(
        _mm512_mul_ps(_mm512_set1_ps(0.797_884_6), x),
        _mm512_add_ps(
            _mm512_set1_ps(1.0),
            _mm512_mul_ps(_mm512_set1_ps(0.044715), x2),
        ),
    );
    let e = exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0), u));
    _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
}

#[cfg(target_arch = "x86_64")]
/// Applies the epilogue to the accumulators and stores rows `0..R` of the tile.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn finish<const R: usize>(
    acc: &[[__m512; NV]; R],
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: TileEpilogue,
) {
    let mk = masks::<NV>(cols);
    let mut b = [_mm512_setzero_ps(); NV];
    for v in 0..NV {
        b[v] = _mm512_maskz_loadu_ps(mk[v], bias.add(16 * v));
    }
    if let TileEpilogue::Tiles { gelu } = epi {
        // Per 16 columns: the eight rows (zero past R) transposed to depth pairs, stored while valid.
        for v in 0..NV {
            let mut rows = [_mm512_setzero_ps(); MR];
            for r in 0..R {
                let x = _mm512_add_ps(acc[r][v], b[v]);
                rows[r] = if gelu { gelu16(x) } else { x };
            }
            let pairs = transpose_regs(rows);
            for (i, pv) in pairs.iter().enumerate() {
                let d = 16 * v + 2 * i;
                if d + 1 < cols {
                    _mm512_storeu_ps(c.add(8 * d), *pv);
                } else if d < cols {
                    _mm512_mask_storeu_ps(c.add(8 * d), 0x00FF, *pv);
                }
            }
        }
        return;
    }
    if let TileEpilogue::PairTiles { gelu } = epi {
        // SAFETY (AVX512-BF16): pair tiles are written only by `vdpbf16ps` layers, which exist only where `pack`
        // saw the feature (`PackedLinear::row_tiles`).
        store_pair_tiles::<R>(acc, &b, c.cast::<u32>(), cols, gelu);
        return;
    }
    for r in 0..R {
        for v in 0..NV {
            let x = _mm512_add_ps(acc[r][v], b[v]);
            let y = match epi {
                TileEpilogue::Bias => x,
                TileEpilogue::BiasGelu => gelu16(x),
                TileEpilogue::Tiles { .. } | TileEpilogue::PairTiles { .. } => {
                    unreachable!("handled above")
                }
                TileEpilogue::GatedResidual {
                    residual,
                    gate,
                    gate_rows,
                } => {
                    let res = _mm512_maskz_loadu_ps(mk[v], residual.add(r * ldc + 16 * v));
                    let g = _mm512_maskz_loadu_ps(mk[v], gate.add(gate_rows[r] + 16 * v));
                    _mm512_fmadd_ps(g, x, res)
                }
            };
            _mm512_mask_storeu_ps(c.add(r * ldc + 16 * v), mk[v], y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// The [`TileEpilogue::PairTiles`] store: per row, its 48 columns (bias added, GELU'd) rounded to 24 bf16 pairs
/// by `vcvtne2ps2bf16` / `vcvtneps2bf16` (the rounding of [`to_bf16`], so the pairs equal packing the row-major
/// output afterwards); then the eight rows' pairs transposed as 32-bit values, 16 pairs (two vectors of eight
/// rows) at a time, and stored while the pair holds a valid column.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn store_pair_tiles<const R: usize>(
    acc: &[[__m512; NV]; R],
    b: &[__m512; NV],
    c: *mut u32,
    cols: usize,
    gelu: bool,
) {
    let valid_pairs = cols.div_ceil(2);
    let mut lo = [_mm512_setzero_ps(); MR];
    let mut hi = [_mm512_setzero_ps(); MR];
    for r in 0..R {
        let x: [__m512; NV] = std::array::from_fn(|v| {
            let x = _mm512_add_ps(acc[r][v], b[v]);
            if gelu {
                gelu16(x)
            } else {
                x
            }
        });
        // Pairs 0..16 (columns 0..32) and 16..24 (columns 32..48, the upper half zero).
        lo[r] = _mm512_castsi512_ps(std::mem::transmute::<__m512bh, __m512i>(
            _mm512_cvtne2ps_pbh(x[1], x[0]),
        ));
        hi[r] = _mm512_castsi512_ps(_mm512_zextsi256_si512(std::mem::transmute::<
            __m256bh,
            __m256i,
        >(_mm512_cvtneps_pbh(x[2]))));
    }
    for (half, rows) in [lo, hi].into_iter().enumerate() {
        for (i, pv) in transpose_regs(rows).iter().enumerate() {
            let p = 16 * half + 2 * i;
            if p + 1 < valid_pairs {
                _mm512_storeu_ps(c.add(8 * p).cast(), *pv);
            } else if p < valid_pairs {
                _mm512_mask_storeu_ps(c.add(8 * p).cast(), 0x00FF, *pv);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// Rows `0..R` of a finished `[R, 48]` f32 block (contiguous rows of 48: the AMX tiles' output, see
/// [`super::amx`]) through the epilogue and stored like a tile's accumulators.
///
/// # Safety
/// AVX-512F present; `acc` readable for `R * 48` values; the rest as for [`tile_f32`].
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
pub unsafe fn finish_block<const R: usize>(
    acc: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: TileEpilogue,
) {
    let mut regs = [[_mm512_setzero_ps(); NV]; R];
    for r in 0..R {
        for v in 0..NV {
            regs[r][v] = _mm512_loadu_ps(acc.add(r * NR + 16 * v));
        }
    }
    finish::<R>(&regs, bias, c, ldc, cols, epi);
}

#[cfg(target_arch = "x86_64")]
/// Early in a tile (depth step `kk < R`), its output row `kk` is requested for writing (`prefetchw`) and, for the
/// gated residual, the residual row for reading: the tile ends with one store per output vector, and when those
/// lines were not in cache the stores stalled the next tile behind their read-for-ownership misses (`perf` put 4 %
/// of the batch-1 forward on the instructions after each tile). Interleaved A/B: +0-6 % on the batch-1 DiT-B
/// products, up to +11 % at batch 8 (mlp in, 25 MB of output), +0-6 % in bf16.
#[inline(always)]
unsafe fn prefetch_destination(
    kk: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: &TileEpilogue,
) {
    if let TileEpilogue::Tiles { .. } = epi {
        // The tile's block: 8 rows x `cols` depths, contiguous (three lines per depth step).
        for off in [0, 16, 32] {
            if 6 * kk + off / 8 < cols {
                std::arch::asm!(
                    "prefetchw [{p}]",
                    p = in(reg) c.add(48 * kk + off),
                    options(nostack, preserves_flags, readonly)
                );
            }
        }
        return;
    }
    if let TileEpilogue::PairTiles { .. } = epi {
        // 8 rows x up to 24 pairs of 4 bytes: twelve lines, two per depth step from the first.
        for off in [0, 16] {
            if 32 * kk + off < 8 * cols.div_ceil(2) {
                std::arch::asm!(
                    "prefetchw [{p}]",
                    p = in(reg) c.add(32 * kk + off),
                    options(nostack, preserves_flags, readonly)
                );
            }
        }
        return;
    }
    let row = c.add(kk * ldc);
    for off in [0, 16, 32, cols - 1] {
        if off < cols {
            // SAFETY (caller): the row's valid columns are writable; PREFETCHW exists on every AVX-512 CPU.
            std::arch::asm!(
                "prefetchw [{p}]",
                p = in(reg) row.add(off),
                options(nostack, preserves_flags, readonly)
            );
        }
    }
    if let TileEpilogue::GatedResidual { residual, .. } = epi {
        let res = residual.add(kk * ldc);
        for off in [0, 16, 32, cols - 1] {
            if off < cols {
                _mm_prefetch::<_MM_HINT_T0>(res.add(off).cast());
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// One f32 tile: a packed row tile `a` (`[k, 8]`: the tile's 8 rows side by side for each depth index, see
/// [`super::packed`]) times the `[k, 48]` panel `w` (row-major, zero beyond the valid `cols`), epilogue, store of
/// rows `0..R` into `c` (row stride `ldc`, only the valid columns). Meanwhile the `next` lines are prefetched into
/// L2, one per depth step.
///
/// # Safety
/// AVX-512F present; `a` readable for `k * 8`, `w` for `k * 48`, `bias` (and the epilogue's arrays) for the valid
/// columns, `c` writable for `R` rows of the valid columns.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub unsafe fn tile_f32<const R: usize>(
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
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let mut ap = a;
    let mut wp = w;
    for kk in 0..k {
        if kk < next.lines {
            _mm_prefetch::<_MM_HINT_T1>(next.ptr.add(64 * kk));
        }
        if kk < R {
            prefetch_destination(kk, c, ldc, cols, &epi);
        }
        let mut wv = [_mm512_setzero_ps(); NV];
        for v in 0..NV {
            _mm_prefetch::<_MM_HINT_T0>(wp.add(PF + 16 * v).cast());
            wv[v] = _mm512_loadu_ps(wp.add(16 * v));
        }
        for r in 0..R {
            let x = _mm512_set1_ps(*ap.add(r));
            for v in 0..NV {
                acc[r][v] = _mm512_fmadd_ps(x, wv[v], acc[r][v]);
            }
        }
        wp = wp.add(NR);
        ap = ap.add(MR);
    }
    finish::<R>(&acc, bias, c, ldc, cols, epi);
}

#[cfg(target_arch = "x86_64")]
/// One bf16 tile: like [`tile_f32`] with `a` packed as `[pairs, 8, 2]` bf16 (each row's depth pair side by side)
/// and the panel `w` holding `w[2p][j], w[2p+1][j]` side by side for `j` in `0..48`, in blocks of 16 pairs (1536
/// bf16) inside which `strides = (pair, vector)` step from one pair to the next and from one 16-column vector to
/// the next: `(96, 32)` is plain pair rows of 96 bf16, `(32, 512)` the AMX panels' tiles.
///
/// # Safety
/// As [`tile_f32`], plus AVX512-BF16 present; `w` readable for `pairs.div_ceil(16) * 1536` bf16 values.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub unsafe fn tile_bf16<const R: usize>(
    pairs: usize,
    (ps, vs): (usize, usize),
    a: *const u16,
    w: *const u16,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: TileEpilogue,
    next: Ahead,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let mut ap = a.cast::<i32>();
    for kk in 0..pairs {
        if kk < next.lines {
            _mm_prefetch::<_MM_HINT_T1>(next.ptr.add(64 * kk));
        }
        if kk < R {
            prefetch_destination(kk, c, ldc, cols, &epi);
        }
        // Pair kk's first vector; `2 * PF` ahead is the same vector three 16-pair blocks on in both layouts.
        let wp = w.add((kk / 16) * 32 * NR + (kk % 16) * ps);
        let mut wv: [__m512bh; NV] = std::mem::zeroed();
        for v in 0..NV {
            _mm_prefetch::<_MM_HINT_T0>(wp.add(2 * PF + vs * v).cast());
            wv[v] =
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wp.add(vs * v).cast()));
        }
        for r in 0..R {
            let pair = ap.add(r).read_unaligned();
            let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
            for v in 0..NV {
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, wv[v]);
            }
        }
        ap = ap.add(MR);
    }
    finish::<R>(&acc, bias, c, ldc, cols, epi);
}

#[cfg(target_arch = "x86_64")]
/// A bf16 panel of [`tile_bf16`] (`k.div_ceil(2)` rows of 96 bf16, depth pairs interleaved) widened into the
/// `[k, 48]` f32 panel of [`tile_f32`] at `dst`: per 16 columns one load, the even depth shifted up and the odd one
/// masked (both exact). For CPUs whose `vdpbf16ps` is slower than two FMAs, the bf16 layers widen each panel once
/// per row block and multiply it with the f32 tile, which it then serves from L2 like an f32 panel.
///
/// # Safety
/// AVX-512F and BW present; `w` readable for `k.div_ceil(2) * 96` values, `dst` writable for `k * 48`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn widen_bf16_panel(w: *const u16, k: usize, dst: *mut f32) {
    for kk in 0..k.div_ceil(2) {
        for v in 0..NV {
            let words = _mm512_loadu_si512(w.add(2 * NR * kk + 32 * v).cast());
            let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(words));
            _mm512_storeu_ps(dst.add(NR * 2 * kk + 16 * v), even);
            if 2 * kk + 1 < k {
                let odd = _mm512_castsi512_ps(_mm512_maskz_mov_epi16(0xAAAA_AAAA, words));
                _mm512_storeu_ps(dst.add(NR * (2 * kk + 1) + 16 * v), odd);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// One tile of bf16 weights and f32 activations without a widened panel: `a` an f32 row tile as for [`tile_f32`],
/// `w` the bf16 panel of [`tile_bf16`], each depth pair's words widened in registers as in [`widen_bf16_panel`].
/// Two extra operations per 16 FMAs, so only for products of one row tile (the adaLN rows), where widening a panel
/// for one tile would double the panel's traffic.
///
/// # Safety
/// As [`tile_f32`], with `w` readable for `k.div_ceil(2) * 96` bf16 values (AVX-512BW for the masked move).
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub unsafe fn tile_bf16w<const R: usize>(
    k: usize,
    a: *const f32,
    w: *const u16,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: TileEpilogue,
    next: Ahead,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let mut ap = a;
    let mut wp = w;
    for kk in 0..k.div_ceil(2) {
        if kk < next.lines {
            _mm_prefetch::<_MM_HINT_T1>(next.ptr.add(64 * kk));
        }
        if kk < R {
            prefetch_destination(kk, c, ldc, cols, &epi);
        }
        let mut wv = [_mm512_setzero_si512(); NV];
        for v in 0..NV {
            _mm_prefetch::<_MM_HINT_T0>(wp.add(2 * PF + 32 * v).cast());
            wv[v] = _mm512_loadu_si512(wp.add(32 * v).cast());
        }
        for v in 0..NV {
            let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wv[v]));
            for r in 0..R {
                acc[r][v] = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(r)), even, acc[r][v]);
            }
        }
        if 2 * kk + 1 < k {
            for v in 0..NV {
                let odd = _mm512_castsi512_ps(_mm512_maskz_mov_epi16(0xAAAA_AAAA, wv[v]));
                for r in 0..R {
                    acc[r][v] = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(MR + r)), odd, acc[r][v]);
                }
            }
        }
        wp = wp.add(2 * NR);
        // Wrapping: past an odd depth's last pair this points beyond the row tile (never read).
        ap = ap.wrapping_add(2 * MR);
    }
    finish::<R>(&acc, bias, c, ldc, cols, epi);
}

#[cfg(target_arch = "x86_64")]
/// Independent accumulators of [`chains_f32`] and [`chains_bf16`] (more than either instruction's latency times
/// its throughput; 24 made the compiler spill them).
pub const CHAINS: usize = 16;

#[cfg(target_arch = "x86_64")]
/// `iters` rounds of [`CHAINS`] independent 16-lane FMAs, registers only: the f32 arithmetic peak.
///
/// # Safety
/// AVX-512F present.
#[target_feature(enable = "avx512f")]
pub unsafe fn chains_f32(iters: usize) -> f32 {
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    let x = _mm512_set1_ps(std::hint::black_box(0.999_9));
    let y = _mm512_set1_ps(std::hint::black_box(1e-4));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}

#[cfg(target_arch = "x86_64")]
/// [`chains_f32`] with `vdpbf16ps` (two bf16 products and sums per f32 lane).
///
/// # Safety
/// AVX512-BF16 present.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn chains_bf16(iters: usize) -> f32 {
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    let x: __m512bh = std::mem::transmute(_mm512_set1_epi16(std::hint::black_box(0x3f80)));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_dpbf16_ps(*a, x, x);
        }
    }
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}

#[cfg(target_arch = "x86_64")]
/// `n` f32 values to bf16 (round to nearest even), 16 at a time.
///
/// # Safety
/// AVX512-BF16 present; `src` readable and `dst` writable for `n` elements.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn to_bf16(src: *const f32, dst: *mut u16, n: usize) {
    let mut i = 0;
    while i + 16 <= n {
        let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.add(i)));
        _mm256_storeu_si256(
            dst.add(i).cast(),
            std::mem::transmute::<__m256bh, __m256i>(v),
        );
        i += 16;
    }
    if i < n {
        // The tail through the same instruction (it flushes denormals, which `bf16_bits` keeps), so every value
        // rounds alike wherever it falls in the row.
        let v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lane_mask(n - i), src.add(i)));
        let bits = std::mem::transmute::<__m256bh, [u16; 16]>(v);
        std::ptr::copy_nonoverlapping(bits.as_ptr(), dst.add(i), n - i);
    }
}

/// Eight rows of 32-bit values, depth `j0..j0 + 16` of each (`rows[r]` readable for 16 values), transposed into
/// `dst` as `[16, 8]` (depth-major: the row tiles of [`super::packed`]). Three rounds of shuffles (32-bit,
/// 64-bit and 128-bit interleaves), 32 in all, instead of 128 scalar stores; bits are moved, never converted, so
/// f32 and pairs of bf16 alike.
///
/// # Safety
/// AVX-512F present; each `rows[r]` readable for 16 values, `dst` writable for 128.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose_8x16(rows: [*const f32; 8], dst: *mut f32) {
    let out = transpose_regs(rows.map(|p| _mm512_loadu_ps(p)));
    for (o, v) in out.iter().enumerate() {
        _mm512_storeu_ps(dst.add(16 * o), *v);
    }
}

/// [`transpose_8x16`] with depth `d` stored at `dst + d * ld` (eight values each): a block of a transposed matrix
/// whose rows are `ld` apart (attention's `kᵀ`).
///
/// # Safety
/// AVX-512F present; each `rows[r]` readable for 16 values, `dst + d * ld` writable for 8 values, `d < 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose_8x16_to(rows: [*const f32; 8], dst: *mut f32, ld: usize) {
    let out = transpose_regs(rows.map(|p| _mm512_loadu_ps(p)));
    for (o, v) in out.iter().enumerate() {
        _mm256_storeu_ps(dst.add(2 * o * ld), _mm512_castps512_ps256(*v));
        _mm256_storeu_ps(
            dst.add((2 * o + 1) * ld),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*v))),
        );
    }
}

/// [`transpose_8x16`] in registers: eight rows of 16 values in, eight vectors out, vector `o` holding depths `2o`
/// and `2o + 1` of the eight rows.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_regs(r: [__m512; 8]) -> [__m512; 8] {
    // Per 128-bit lane (depths 4L..4L+4): a[2i] = rows 2i, 2i+1 interleaved at depths 0, 1 of the lane; a[2i+1] at
    // depths 2, 3.
    let a = [
        _mm512_unpacklo_ps(r[0], r[1]),
        _mm512_unpackhi_ps(r[0], r[1]),
        _mm512_unpacklo_ps(r[2], r[3]),
        _mm512_unpackhi_ps(r[2], r[3]),
        _mm512_unpacklo_ps(r[4], r[5]),
        _mm512_unpackhi_ps(r[4], r[5]),
        _mm512_unpacklo_ps(r[6], r[7]),
        _mm512_unpackhi_ps(r[6], r[7]),
    ];
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    // b[d] (d = depth 0..4 within each lane) holds rows 0-3, b[4 + d] rows 4-7.
    let b = [
        ps(_mm512_unpacklo_pd(pd(a[0]), pd(a[2]))),
        ps(_mm512_unpackhi_pd(pd(a[0]), pd(a[2]))),
        ps(_mm512_unpacklo_pd(pd(a[1]), pd(a[3]))),
        ps(_mm512_unpackhi_pd(pd(a[1]), pd(a[3]))),
        ps(_mm512_unpacklo_pd(pd(a[4]), pd(a[6]))),
        ps(_mm512_unpackhi_pd(pd(a[4]), pd(a[6]))),
        ps(_mm512_unpacklo_pd(pd(a[5]), pd(a[7]))),
        ps(_mm512_unpackhi_pd(pd(a[5]), pd(a[7]))),
    ];
    let mut out = [_mm512_setzero_ps(); 8];
    // Depths d and d + 1 (d even, within each lane), all eight rows: lane 0 of the input gives depths d, d + 1;
    // lane 1: 4 + d; lane 2: 8 + d; lane 3: 12 + d.
    for d in [0, 2] {
        let lo = _mm512_shuffle_f32x4::<0x44>(b[d], b[4 + d]);
        let lo1 = _mm512_shuffle_f32x4::<0x44>(b[d + 1], b[5 + d]);
        let hi = _mm512_shuffle_f32x4::<0xEE>(b[d], b[4 + d]);
        let hi1 = _mm512_shuffle_f32x4::<0xEE>(b[d + 1], b[5 + d]);
        out[d / 2] = _mm512_shuffle_f32x4::<0x88>(lo, lo1);
        out[(4 + d) / 2] = _mm512_shuffle_f32x4::<0xDD>(lo, lo1);
        out[(8 + d) / 2] = _mm512_shuffle_f32x4::<0x88>(hi, hi1);
        out[(12 + d) / 2] = _mm512_shuffle_f32x4::<0xDD>(hi, hi1);
    }
    out
}

/// The bf16 nearest to `x` (ties to even; NaN stays a quiet NaN), as the bits of its 16-bit pattern.
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// Columns per block of [`rows_x64`] (four 16-lane vectors).
pub const NB: usize = 64;
/// Rows per [`rows_x64`] tile.
pub const RB: usize = 6;

/// `C[0..R, 0..cols] = A[0..R, 0..k] · W[0..k, 0..cols]` for unpacked row-major `A` (row stride `lda`) and `W`
/// (row stride `ldw`), `cols <= 64`, stored into `C` (row stride `ldc`): the attention products, whose operands
/// are strided views of the fused projection (`q kᵀ` with `kᵀ` transposed per head, `p v` with `v` in place).
///
/// # Safety
/// AVX-512F present; `a` readable for `R` rows of `k`, `w` for `k` rows of `cols`, `c` writable for `R` rows of
/// `cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub unsafe fn rows_x64<const R: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    w: *const f32,
    ldw: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    let mk = masks::<4>(cols);
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let mut rows = [a; R];
    for (r, p) in rows.iter_mut().enumerate() {
        *p = a.add(r * lda);
    }
    let mut wp = w;
    for kk in 0..k {
        let w0 = _mm512_maskz_loadu_ps(mk[0], wp);
        let w1 = _mm512_maskz_loadu_ps(mk[1], wp.add(16));
        let w2 = _mm512_maskz_loadu_ps(mk[2], wp.add(32));
        let w3 = _mm512_maskz_loadu_ps(mk[3], wp.add(48));
        for r in 0..R {
            let x = _mm512_set1_ps(*rows[r].add(kk));
            acc[r][0] = _mm512_fmadd_ps(x, w0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, w1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(x, w2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(x, w3, acc[r][3]);
        }
        wp = wp.add(ldw);
    }
    for r in 0..R {
        for v in 0..4 {
            _mm512_mask_storeu_ps(c.add(r * ldc + 16 * v), mk[v], acc[r][v]);
        }
    }
}

/// [`rows_x64`] in bf16: `a` rows of bf16 (row stride `lda` elements, `2 * pairs` per row, depth pairs side by
/// side), `w` as `pairs` rows of `u32` (row stride `ldw`), each holding the bf16 pair `w[2p][j], w[2p+1][j]` of
/// column `j`; f32 accumulation into `c`.
///
/// # Safety
/// AVX512-BF16 present; `a` readable for `R` rows of `2 * pairs`, `w` for `pairs` rows of `cols`, `c` writable
/// for `R` rows of `cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub unsafe fn rows_x64_bf16<const R: usize>(
    pairs: usize,
    a: *const u16,
    lda: usize,
    w: *const u32,
    ldw: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    let mk = masks::<4>(cols);
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let mut rows = [a.cast::<i32>(); R];
    for (r, p) in rows.iter_mut().enumerate() {
        *p = a.add(r * lda).cast::<i32>();
    }
    let mut wp = w;
    for kk in 0..pairs {
        let mut wv: [__m512bh; 4] = std::mem::zeroed();
        for v in 0..4 {
            wv[v] = std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi32(
                mk[v],
                wp.add(16 * v).cast(),
            ));
        }
        for r in 0..R {
            let x: __m512bh =
                std::mem::transmute(_mm512_set1_epi32(rows[r].add(kk).read_unaligned()));
            for v in 0..4 {
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, wv[v]);
            }
        }
        wp = wp.add(ldw);
    }
    for r in 0..R {
        for v in 0..4 {
            _mm512_mask_storeu_ps(c.add(r * ldc + 16 * v), mk[v], acc[r][v]);
        }
    }
}
