//! The AVX2 micro-kernel behind [`super::packed`] on CPUs without AVX-512 (`CpuKernels::Avx2`).
//!
//! It multiplies the same packed layouts as [`super::avx512`] (weight panels `[K, 48]`, row tiles `[K, 8]`), so
//! packing, the task split and the row tiles handed between layers are shared. AVX2 has 16 registers of 8 lanes
//! where AVX-512 has 32 of 16, so each `8 x 48` tile is computed as up to four `4 x 24` sub-tiles: 12
//! accumulators, 3 panel vectors and a broadcast, each sub-tile over the whole depth, with the layer's epilogue
//! (bias, tanh-GELU, gated residual, or the next product's row tiles) applied in registers before its store. The
//! arithmetic per output element is the AVX-512 tile's (one FMA per depth step in the same order, the same
//! epilogue), so both kernels give the same bits.
//!
//! Written here rather than left to the `gemm` crate for the reasons in [`super::avx512`]: the weights packed once
//! at load instead of on every call, and the element-wise work fused into the product.
//!
//! Every function here is `unsafe`: the caller checks AVX2 and FMA at run time and passes pointers whose extents it
//! has checked.

use std::arch::x86_64::*;

use super::avx512::{Ahead, TileEpilogue, MR, NR};

/// Rows of a sub-tile.
const SUB_ROWS: usize = 4;
/// Columns of a sub-tile: half a panel.
const SUB_COLS: usize = NR / 2;
/// 8-lane vectors per sub-tile row.
const SV: usize = SUB_COLS / 8;
/// How far ahead (in panel elements: 48 depth rows) the panel is prefetched, as in [`super::avx512`].
const PF: usize = NR * 48;

/// Calls `$f::<R>` with the run-time sub-tile row count (1..=4) as the const `R`.
macro_rules! by_sub_rows {
    ($rows:expr, $f:ident, $($arg:expr),*) => {
        match $rows {
            4 => $f::<4>($($arg),*),
            3 => $f::<3>($($arg),*),
            2 => $f::<2>($($arg),*),
            _ => $f::<1>($($arg),*),
        }
    };
}

/// The mask of the first `n` (0..=8) lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn lane_mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n.min(8) as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// `exp(z)` on 8 lanes: the arithmetic of the 16-lane `exp16` in [`super::avx512`] (Cody-Waite reduction,
/// degree-7 Taylor polynomial with fused multiply-adds).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(z: __m256) -> __m256 {
    let z = _mm256_min_ps(
        _mm256_max_ps(z, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let round = _mm256_set1_ps(12_582_912.0);
    let t = _mm256_fmadd_ps(z, _mm256_set1_ps(std::f32::consts::LOG2_E), round);
    let n = _mm256_sub_ps(t, round);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), z);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 5040.0);
    for k in [720.0f32, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = _mm256_fmadd_ps(r, p, _mm256_set1_ps(1.0 / k));
    }
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_sub_epi32(
            _mm256_castps_si256(t),
            _mm256_set1_epi32(12_582_912f32.to_bits() as i32),
        ),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
}

/// tanh-GELU on 8 lanes, as the 16-lane `gelu16` of [`super::avx512`].
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu8(x: __m256) -> __m256 {
    let x2 = _mm256_mul_ps(x, x);
    let u = _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(0.797_884_6), x),
        _mm256_add_ps(
            _mm256_set1_ps(1.0),
            _mm256_mul_ps(_mm256_set1_ps(0.044715), x2),
        ),
    );
    let e = exp8(_mm256_mul_ps(_mm256_set1_ps(-2.0), u));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// One f32 tile, as [`super::avx512::tile_f32`]: rows `0..rows` (1..=8) of the packed row tile `a` (`[k, 8]`) times
/// the `[k, 48]` panel `w`, the epilogue, the store into `c`; the `next` lines are prefetched into L2 during the
/// first sub-tile.
///
/// # Safety
/// AVX2 and FMA present; otherwise as [`super::avx512::tile_f32`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_f32(
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
    for (s, sub) in subs_of(rows, cols).enumerate() {
        let Some(sub) = sub else {
            // Row tiles are written whole: the rows past `rows` as zeros.
            let (r0, c0) = (SUB_ROWS * (s / 2), SUB_COLS * (s % 2));
            if let (TileEpilogue::Tiles { .. }, true) = (epi, c0 < cols) {
                let cols = (cols - c0).min(SUB_COLS);
                zero_tile_rows(
                    c,
                    Sub {
                        r0,
                        c0,
                        rows: 0,
                        cols,
                    },
                    0,
                );
            }
            continue;
        };
        let ahead = if s == 0 { next } else { Ahead::NONE };
        let (a, w) = (a.add(sub.r0), w.add(sub.c0));
        by_sub_rows!(sub.rows, sub_tile, k, a, w, bias, c, ldc, sub, epi, ahead);
    }
}

/// Where a sub-tile lies in its tile: rows `r0..r0 + rows` (`rows` valid, at most 4), columns `c0..c0 + cols`
/// (`cols` valid, at most 24).
#[derive(Clone, Copy)]
struct Sub {
    r0: usize,
    c0: usize,
    rows: usize,
    cols: usize,
}

/// The four sub-tiles of a tile with `rows` and `cols` valid, in the order (rows 0-3, columns 0-23), (0-3,
/// 24-47), (4-7, 0-23), (4-7, 24-47); `None` where a sub-tile holds no valid element.
fn subs_of(rows: usize, cols: usize) -> impl Iterator<Item = Option<Sub>> {
    (0..4).map(move |s| {
        let (r0, c0) = (SUB_ROWS * (s / 2), SUB_COLS * (s % 2));
        (r0 < rows && c0 < cols).then(|| Sub {
            r0,
            c0,
            rows: (rows - r0).min(SUB_ROWS),
            cols: (cols - c0).min(SUB_COLS),
        })
    })
}

/// Zeros of rows `r0 + from..r0 + 4` of a row-tile output (`c` at the tile's block: element `(row i, column j)` at
/// `c[8 j + i]`), over the sub-tile's columns.
#[inline]
unsafe fn zero_tile_rows(c: *mut f32, sub: Sub, from: usize) {
    for j in sub.c0..sub.c0 + sub.cols {
        for i in sub.r0 + from..sub.r0 + SUB_ROWS {
            *c.add(MR * j + i) = 0.0;
        }
    }
}

/// One `R x 24` sub-tile over the whole depth (`a` and `w` at its first row and column), then [`finish`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn sub_tile<const R: usize>(
    k: usize,
    a: *const f32,
    w: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    sub: Sub,
    epi: TileEpilogue,
    next: Ahead,
) {
    let mut acc = [[_mm256_setzero_ps(); SV]; SUB_ROWS];
    let mut ap = a;
    let mut wp = w;
    for kk in 0..k {
        if kk < next.lines {
            _mm_prefetch::<_MM_HINT_T1>(next.ptr.add(64 * kk));
        }
        // The 96 bytes this sub-tile reads of a depth row lie on two lines (the rows are three whole lines of a
        // line-aligned panel), its first and its last value's. A third prefetch, of the middle value's line (always
        // one of the two), cost 2-3.5 % of the products' speed on a Zen 4 (interleaved A/B, docs/benchmarks.md).
        for off in [0, SUB_COLS - 1] {
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PF + off).cast());
        }
        let mut wv = [_mm256_setzero_ps(); SV];
        for v in 0..SV {
            wv[v] = _mm256_loadu_ps(wp.add(8 * v));
        }
        for r in 0..R {
            let x = _mm256_broadcast_ss(&*ap.add(r));
            for v in 0..SV {
                acc[r][v] = _mm256_fmadd_ps(x, wv[v], acc[r][v]);
            }
        }
        wp = wp.add(NR);
        ap = ap.add(MR);
    }
    finish(&acc, bias, c, ldc, sub, epi);
}

/// The epilogue of one sub-tile's finished accumulators and its store (`c`, `ldc` and the epilogue's pointers
/// those of the whole tile, `bias` the panel's).
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn finish(
    acc: &[[__m256; SV]; SUB_ROWS],
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    sub: Sub,
    epi: TileEpilogue,
) {
    for v in 0..SV {
        let valid = sub.cols.saturating_sub(8 * v).min(8);
        if valid == 0 {
            break;
        }
        let mask = lane_mask(valid);
        let col = sub.c0 + 8 * v;
        let b = _mm256_maskload_ps(bias.add(col), mask);
        for r in 0..sub.rows {
            let i = sub.r0 + r;
            let x = _mm256_add_ps(acc[r][v], b);
            let dst = c.add(i * ldc + col);
            match epi {
                TileEpilogue::Bias => _mm256_maskstore_ps(dst, mask, x),
                TileEpilogue::BiasGelu => _mm256_maskstore_ps(dst, mask, gelu8(x)),
                TileEpilogue::GatedResidual {
                    residual,
                    gate,
                    gate_rows,
                } => {
                    let res = _mm256_maskload_ps(residual.add(i * ldc + col), mask);
                    let g = _mm256_maskload_ps(gate.add(gate_rows[i] + col), mask);
                    _mm256_maskstore_ps(dst, mask, _mm256_fmadd_ps(g, x, res));
                }
                TileEpilogue::PairTiles { .. } => {
                    unreachable!("bf16 pair tiles come from AVX512-BF16 layers only")
                }
                TileEpilogue::Tiles { gelu } => {
                    let mut y = [0f32; 8];
                    _mm256_storeu_ps(y.as_mut_ptr(), if gelu { gelu8(x) } else { x });
                    for (j, &y) in y.iter().enumerate().take(valid) {
                        *c.add(MR * (col + j) + i) = y;
                    }
                }
            }
        }
    }
    if let TileEpilogue::Tiles { .. } = epi {
        zero_tile_rows(c, sub, sub.rows);
    }
}

/// `dst[kk * 8 + r] = rows[r][kk]` for `kk` in `0..8`: eight rows of eight 32-bit values as one block of a row
/// tile (the AVX2 counterpart of [`super::avx512::transpose_8x16`]).
///
/// # Safety
/// AVX present; each row readable for 8 values, `dst` writable for 64.
#[target_feature(enable = "avx")]
pub unsafe fn transpose_8x8(rows: [*const f32; 8], dst: *mut f32) {
    let mut r = [_mm256_setzero_ps(); 8];
    for i in 0..8 {
        r[i] = _mm256_loadu_ps(rows[i]);
    }
    // Pairs of rows interleaved, then quads, then the 128-bit halves exchanged.
    let mut t = [_mm256_setzero_ps(); 8];
    for p in 0..4 {
        t[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    let mut s = [_mm256_setzero_ps(); 8];
    for q in 0..2 {
        let (lo, hi) = (4 * q, 4 * q + 2);
        s[4 * q] = _mm256_shuffle_ps::<0x44>(t[lo], t[hi]);
        s[4 * q + 1] = _mm256_shuffle_ps::<0xEE>(t[lo], t[hi]);
        s[4 * q + 2] = _mm256_shuffle_ps::<0x44>(t[lo + 1], t[hi + 1]);
        s[4 * q + 3] = _mm256_shuffle_ps::<0xEE>(t[lo + 1], t[hi + 1]);
    }
    for j in 0..4 {
        _mm256_storeu_ps(
            dst.add(8 * j),
            _mm256_permute2f128_ps::<0x20>(s[j], s[4 + j]),
        );
        _mm256_storeu_ps(
            dst.add(8 * (4 + j)),
            _mm256_permute2f128_ps::<0x31>(s[j], s[4 + j]),
        );
    }
}

/// Independent accumulators of [`chains_f32`].
pub const CHAINS: usize = 12;

/// `iters` rounds of [`CHAINS`] independent 8-lane FMAs, registers only: the AVX2 f32 arithmetic peak.
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn chains_f32(iters: usize) -> f32 {
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_8x8_moves_every_value() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        let src: Vec<f32> = (0..64).map(|v| v as f32).collect();
        let rows: [*const f32; 8] = std::array::from_fn(|r| src[8 * r..].as_ptr());
        let mut dst = [0f32; 64];
        // SAFETY: AVX detected; eight rows of eight values, 64 destination values.
        unsafe { transpose_8x8(rows, dst.as_mut_ptr()) };
        for kk in 0..8 {
            for r in 0..8 {
                assert_eq!(dst[kk * 8 + r], src[r * 8 + kk], "depth {kk} row {r}");
            }
        }
    }
}
