//! Intel AMX (Advanced Matrix Extensions) tiles for [`super::packed`]'s bf16 layers, on the Xeons that have them
//! (Sapphire Rapids and later): `tdpbf16ps` multiplies a `16 x 32` bf16 tile of `A` by a `32 x 16` bf16 tile of the
//! weights (depth pairs interleaved, as the AVX512-BF16 tiles read them) into a `16 x 16` f32 tile, 16 384 FLOP per
//! instruction.
//!
//! Tile loads must start on a cache line. On the development Xeon (2026-12-03, docs/benchmarks.md) a `tdpbf16ps`
//! from registers issues about every 5 ns per core ([`chains`]); a 1 KB `tileloadd` from L1 takes 2.2-2.5 ns from
//! 64-byte-aligned rows ([`loads`]) but 15-16 ns when each row straddles two lines, which is what a plain `Vec`
//! gave (glibc starts large allocations 16 bytes into a page). So the packed activations and the weight panels are
//! [`super::aligned`] buffers, and the kernels are shaped to load few tiles, each from consecutive lines:
//! - [`rows32`] multiplies 32 rows of `A` by a 48-column panel: a 2 x 2 block of accumulators over the first two
//!   column tiles (each loaded tile feeds two products), then 2 x 1 over the third, 7 loads per 6 products;
//!   [`rows16`] is the 16-row remainder (1 `A` tile, 3 weight tiles, 4 loads per 3 products).
//! - The packed activations ([`row_index`]) and the weight panels ([`weight_index`]) hold each tile as one
//!   contiguous kilobyte per 32-deep step, rather than 16 rows at the row stride.
//!
//! DiT-B's block products at batch 1 on both cores (`odelt-bench gemm`): 0.73-1.12 TFLOP/s with the first kernel
//! (16 rows per call, strided rows, unaligned buffers), 0.94-1.43 with `rows32` on contiguous tiles, 1.12-1.49 with
//! the buffers aligned as well; the bf16 forward at batch 1, l = 12 went from 72-74 to 59-60 ms with the alignment.
//!
//! The f32 result of a call is stored to a block that the AVX-512 epilogue ([`super::avx512::finish_block`])
//! finishes (bias, GELU, gated residual). The products' arithmetic is that of `vdpbf16ps`: bf16 inputs, f32
//! accumulation, round to nearest even, denormals flushed.
//!
//! Written with `asm!` because Rust's AMX intrinsics and `is_x86_feature_detected!("amx-bf16")` are unstable
//! (`x86_amx_intrinsics`); the tile registers are never allocated by the compiler, so the blocks share them
//! safely. Linux hands AMX's 8 KB of tile state to a process only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`),
//! which [`available`] makes once; each task that uses the tiles loads the tile configuration first and releases
//! the tiles at its end ([`Tiles`]), so idle threads carry no tile state through context switches.

use std::arch::asm;
use std::sync::OnceLock;

/// Rows of `A` per tile (and per call).
pub const TM: usize = 16;
/// Depth per tile step (bf16 values per row of an `A` tile).
pub const TK: usize = 32;
/// Columns per call: one packed panel (three 16-column tiles).
const COLS: usize = 48;

/// Whether this CPU and OS run the AMX bf16 tiles: CPUID says AMX-TILE and AMX-BF16 (with AVX512-BF16 for the
/// conversions around them), and the kernel granted this process the tile state. Asked once per process.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16"))
        {
            return false;
        }
        // CPUID leaf 7 exists on every CPU with AVX-512.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        amx_bf16 && amx_tile && request_tile_state()
    })
}

/// Asks Linux for the AMX tile data state (`XFEATURE_XTILEDATA`, 18) for the whole process.
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it changes only what this process may execute.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Other systems: not wired up (Windows enables AMX without a request, but it was never tried).
#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The tile configuration (palette 1): tiles 0-2 accumulate `16 x 16` f32, tile 3 holds `16 x 32` bf16 of `A`,
/// tiles 4-6 hold `16` depth pairs x `16` columns of the weights (tile 7 is used by the peak probe only); every
/// tile is 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        // Bytes per row (little-endian u16 at 16 + 2t), rows (u8 at 48 + t).
        c[16 + 2 * t] = 64;
        c[48 + t] = TM as u8;
        t += 1;
    }
    Config(c)
};

/// The tiles configured on the current thread for the lifetime of the value; released when it drops.
pub struct Tiles(());

impl Tiles {
    /// Loads the tile configuration on this thread.
    ///
    /// # Safety
    /// [`available`] returned true.
    pub unsafe fn configure() -> Tiles {
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly, preserves_flags));
        Tiles(())
    }
}

/// bf16 values of one `A` tile: 16 rows of one 32-deep step.
pub const A_TILE: usize = TM * TK;
/// bf16 values of one 32-deep step of a weight panel: three `16 pairs x 16 columns` tiles, one after another.
const W_STEP: usize = TK * COLS;
/// bf16 values of one weight tile.
const W_TILE: usize = TK * 16;

/// Where the bf16 weight of depth pair `q` (depths `2q`, `2q + 1`), column `j` (of the panel's 48) and depth parity
/// `h` sits in a panel: per 32-deep step, each 16-column tile is a contiguous `16 pairs x 16 columns x 2` block, so
/// that every tile load reads 1 KB of consecutive lines.
pub const fn weight_index(q: usize, j: usize, h: usize) -> usize {
    (q / 16) * W_STEP + (j / 16) * W_TILE + (q % 16) * 32 + (j % 16) * 2 + h
}

/// Where element `(r, kk)` of `A` (depth padded to `kp`, a multiple of [`TK`]) sits in the packed rows: per 16-row
/// tile and 32-deep step, one contiguous `16 x 32` tile.
pub const fn row_index(r: usize, kk: usize, kp: usize) -> usize {
    (r / TM) * TM * kp + (kk / TK) * A_TILE + (r % TM) * TK + kk % TK
}

/// `c[16, 48] = a[16, 32 chunks] · w`: `a` one 16-row tile of the packed rows ([`row_index`]), `w` one panel of
/// `16 chunks` pairs ([`weight_index`]), `c` 16 rows of 48 f32, contiguous.
///
/// # Safety
/// A [`Tiles`] is alive on this thread; the extents above are readable (`a`, `w`) and writable (`c`).
#[inline]
pub unsafe fn rows16(chunks: usize, a: *const u16, w: *const u16, c: *mut f32) {
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        options(nostack, nomem, preserves_flags)
    );
    for step in 0..chunks {
        asm!(
            "tileloadd tmm3, [{a} + {s}*1]",
            "tileloadd tmm4, [{w} + {s}*1]",
            "tdpbf16ps tmm0, tmm3, tmm4",
            "tileloadd tmm5, [{w} + {s}*1 + 1024]",
            "tdpbf16ps tmm1, tmm3, tmm5",
            "tileloadd tmm6, [{w} + {s}*1 + 2048]",
            "tdpbf16ps tmm2, tmm3, tmm6",
            a = in(reg) a.add(step * A_TILE),
            w = in(reg) w.add(step * W_STEP),
            s = in(reg) 64usize,
            options(nostack, readonly, preserves_flags)
        );
    }
    asm!(
        "tilestored [{c} + {s}*1], tmm0",
        "tilestored [{c} + {s}*1 + 64], tmm1",
        "tilestored [{c} + {s}*1 + 128], tmm2",
        c = in(reg) c,
        s = in(reg) COLS * 4,
        options(nostack, preserves_flags)
    );
}

/// [`rows16`] for two 16-row tiles at once (`a1` the second), into 32 rows of `c`: the first two column tiles as a
/// 2 x 2 block of accumulators (each loaded tile feeds two products), then the third as 2 x 1: 1.17 tile loads per
/// product against [`rows16`]'s 1.33 (an aligned 1 KB load costs about half a `tdpbf16ps`, [`loads`], [`chains`]).
///
/// # Safety
/// As for [`rows16`], for both tiles of `a` and all 32 rows of `c`.
#[inline]
pub unsafe fn rows32(chunks: usize, a: *const u16, a1: *const u16, w: *const u16, c: *mut f32) {
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem, preserves_flags)
    );
    for step in 0..chunks {
        asm!(
            "tileloadd tmm4, [{a} + {s}*1]",
            "tileloadd tmm6, [{w} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{w} + {s}*1 + 1024]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a = in(reg) a.add(step * A_TILE),
            a1 = in(reg) a1.add(step * A_TILE),
            w = in(reg) w.add(step * W_STEP),
            s = in(reg) 64usize,
            options(nostack, readonly, preserves_flags)
        );
    }
    let lower = c.add(TM * COLS);
    asm!(
        "tilestored [{c} + {s}*1], tmm0",
        "tilestored [{c} + {s}*1 + 64], tmm1",
        "tilestored [{d} + {s}*1], tmm2",
        "tilestored [{d} + {s}*1 + 64], tmm3",
        "tilezero tmm0",
        "tilezero tmm1",
        c = in(reg) c,
        d = in(reg) lower,
        s = in(reg) COLS * 4,
        options(nostack, preserves_flags)
    );
    for step in 0..chunks {
        asm!(
            "tileloadd tmm6, [{w} + {s}*1 + 2048]",
            "tileloadd tmm4, [{a} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm5, [{a1} + {s}*1]",
            "tdpbf16ps tmm1, tmm5, tmm6",
            a = in(reg) a.add(step * A_TILE),
            a1 = in(reg) a1.add(step * A_TILE),
            w = in(reg) w.add(step * W_STEP),
            s = in(reg) 64usize,
            options(nostack, readonly, preserves_flags)
        );
    }
    asm!(
        "tilestored [{c} + {s}*1 + 128], tmm0",
        "tilestored [{d} + {s}*1 + 128], tmm1",
        c = in(reg) c,
        d = in(reg) lower,
        s = in(reg) COLS * 4,
        options(nostack, preserves_flags)
    );
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `configure`; releasing returns them to their initial state.
        unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
    }
}

/// FLOP of `iters` rounds of 12 `tdpbf16ps` on four accumulators from registers on the calling thread (the AMX column of
/// `odelt-bench gemm`'s arithmetic peak), or `None` without AMX.
pub fn chains(iters: usize) -> Option<f64> {
    if !available() {
        return None;
    }
    // SAFETY: AMX is available; the tiles are zeroed first, nothing touches memory.
    unsafe {
        let tiles = Tiles::configure();
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            options(nostack, nomem)
        );
        for _ in 0..iters {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem, preserves_flags)
            );
        }
        drop(tiles);
    }
    Some((iters * 12 * TM * 16 * TK * 2) as f64)
}

/// Bytes of `iters` rounds of 8 tile loads (1 KB each) from an 8 KB buffer that stays in L1, on the calling
/// thread (the AMX tile-load column of `odelt-bench gemm`'s arithmetic peak: what bounds [`rows32`]), or `None`
/// without AMX.
pub fn loads(iters: usize) -> Option<f64> {
    if !available() {
        return None;
    }
    let buf = super::aligned::Aligned::<u16>::zeroed(8 * A_TILE);
    let p = buf.as_ptr();
    // SAFETY: AMX is available; each load reads 16 rows of 64 bytes inside `buf`.
    unsafe {
        let tiles = Tiles::configure();
        for _ in 0..iters {
            asm!(
                "tileloadd tmm0, [{p} + {s}*1]",
                "tileloadd tmm1, [{p} + {s}*1 + 1024]",
                "tileloadd tmm2, [{p} + {s}*1 + 2048]",
                "tileloadd tmm3, [{p} + {s}*1 + 3072]",
                "tileloadd tmm4, [{p} + {s}*1 + 4096]",
                "tileloadd tmm5, [{p} + {s}*1 + 5120]",
                "tileloadd tmm6, [{p} + {s}*1 + 6144]",
                "tileloadd tmm7, [{p} + {s}*1 + 7168]",
                p = in(reg) p,
                s = in(reg) 64usize,
                options(nostack, readonly, preserves_flags)
            );
        }
        drop(tiles);
    }
    Some((iters * 8 * 1024) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16(x: f32) -> u16 {
        super::super::avx512::bf16_bits(x)
    }

    /// [`rows16`] and [`rows32`] against the same sums in f64 over the bf16-rounded inputs (exact products, so
    /// only the f32 accumulation differs), on the packed layouts of [`row_index`] and [`weight_index`].
    #[test]
    fn both_kernels_are_the_bf16_product() {
        if !available() {
            eprintln!("skipped: no AMX on this CPU");
            return;
        }
        let (chunks, m) = (3, 2 * TM);
        let kp = chunks * TK;
        let av = |r: usize, kk: usize| (((r * kp + kk) * 37 % 101) as f32 - 50.0) / 25.0;
        let wv = |kk: usize, j: usize| ((kk * 13 + j * 7) % 29) as f32 / 8.0 - 1.75;
        let mut a = vec![0u16; m * kp];
        for r in 0..m {
            for kk in 0..kp {
                a[row_index(r, kk, kp)] = bf16(av(r, kk));
            }
        }
        let mut w = vec![0u16; kp * COLS];
        for kk in 0..kp {
            for j in 0..COLS {
                w[weight_index(kk / 2, j, kk % 2)] = bf16(wv(kk, j));
            }
        }
        let up = |b: u16| f32::from_bits(u32::from(b) << 16) as f64;
        let check = |c: &[f32], rows: usize| {
            for r in 0..rows {
                for j in 0..COLS {
                    let want: f64 = (0..kp)
                        .map(|kk| up(bf16(av(r, kk))) * up(bf16(wv(kk, j))))
                        .sum();
                    let got = c[r * COLS + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{rows} rows: row {r} col {j}: {got} vs {want}"
                    );
                }
            }
        };
        let mut c16 = vec![f32::NAN; TM * COLS];
        let mut c32 = vec![f32::NAN; 2 * TM * COLS];
        // SAFETY: AMX is available; the buffers hold the extents the kernels read and write.
        unsafe {
            let _tiles = Tiles::configure();
            rows16(chunks, a.as_ptr(), w.as_ptr(), c16.as_mut_ptr());
            rows32(
                chunks,
                a.as_ptr(),
                a.as_ptr().add(TM * kp),
                w.as_ptr(),
                c32.as_mut_ptr(),
            );
        }
        check(&c16, TM);
        check(&c32, 2 * TM);
    }

    #[test]
    fn the_load_probe_counts_its_bytes() {
        match loads(10) {
            Some(bytes) => assert_eq!(bytes, 80.0 * 1024.0),
            None => assert!(!available()),
        }
    }

    #[test]
    fn the_peak_probe_counts_its_flop() {
        match chains(10) {
            Some(flop) => assert_eq!(flop, (10 * 12 * 16 * 16 * 32 * 2) as f64),
            None => assert!(!available()),
        }
    }
}
