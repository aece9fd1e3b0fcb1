//! Intel AMX (Advanced Matrix Extensions) tiles for [`super::packed`]'s bf16 layers, on the Xeons that have them
//! (Sapphire Rapids and later): `tdpbf16ps` multiplies a `16 x 32` bf16 tile of `A` by a `32 x 16` bf16 tile of the
//! weights (depth pairs interleaved: exactly the pair-interleaved bf16 panels the AVX512-BF16 tiles read) into a
//! `16 x 16` f32 tile, 16 384 FLOP per instruction: on the development Xeon about 2.3 TFLOP/s per core from
//! registers, against about 0.12 TFLOP/s for its f32 FMAs and half that for its `vdpbf16ps` (`odelt-bench gemm`'s
//! arithmetic peak, docs/benchmarks.md). The products reach only 0.35-0.44 TFLOP/s on both cores: each 32-deep
//! step reloads 4 KB of tiles from L2.
//!
//! One call multiplies 16 rows of `A` by a whole 48-column panel (three accumulator tiles, one `A` tile, three
//! weight tiles: 7 of the 8 tile registers), over the depth in steps of 32, and stores the `16 x 48` f32 result
//! to a block that the AVX-512 epilogue ([`super::avx512::finish_block`]) finishes. The products' arithmetic is
//! that of `vdpbf16ps`: bf16 inputs, f32 accumulation, round to nearest even, denormals flushed.
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

/// `c[16, 48] = a[16, 32 chunks] · w`: `a` holds 16 rows of bf16 `lda` values apart (at least `32 chunks` each),
/// `w` a pair-interleaved panel of `16 chunks` rows of 96 bf16 (`w[2p][j], w[2p+1][j]` side by side), `c` 16 rows
/// of 48 f32, contiguous.
///
/// # Safety
/// A [`Tiles`] is alive on this thread; the extents above are readable (`a`, `w`) and writable (`c`).
#[inline]
pub unsafe fn panel(chunks: usize, a: *const u16, lda: usize, w: *const u16, c: *mut f32) {
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        options(nostack, nomem, preserves_flags)
    );
    let (a_stride, w_stride) = (lda * 2, COLS * 4);
    for step in 0..chunks {
        let ap = a.add(step * TK);
        let wp = w.add(step * TK * COLS);
        asm!(
            "tileloadd tmm3, [{a} + {sa}*1]",
            "tileloadd tmm4, [{w} + {sw}*1]",
            "tileloadd tmm5, [{w} + {sw}*1 + 64]",
            "tileloadd tmm6, [{w} + {sw}*1 + 128]",
            "tdpbf16ps tmm0, tmm3, tmm4",
            "tdpbf16ps tmm1, tmm3, tmm5",
            "tdpbf16ps tmm2, tmm3, tmm6",
            a = in(reg) ap,
            sa = in(reg) a_stride,
            w = in(reg) wp,
            sw = in(reg) w_stride,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16(x: f32) -> u16 {
        super::super::avx512::bf16_bits(x)
    }

    /// One call against the same sums in f64 over the bf16-rounded inputs (exact products, so only the f32
    /// accumulation differs).
    #[test]
    fn one_panel_is_the_bf16_product() {
        if !available() {
            eprintln!("skipped: no AMX on this CPU");
            return;
        }
        let (chunks, lda) = (3, 3 * TK + 8);
        let a: Vec<u16> = (0..TM * lda)
            .map(|i| bf16(((i * 37 % 101) as f32 - 50.0) / 25.0))
            .collect();
        let k = chunks * TK;
        // Logical weights w[kk][j], stored pair-interleaved.
        let wv = |kk: usize, j: usize| ((kk * 13 + j * 7) % 29) as f32 / 8.0 - 1.75;
        let mut w = vec![0u16; (k / 2) * 2 * COLS];
        for kk in 0..k {
            for j in 0..COLS {
                w[(kk / 2) * 2 * COLS + 2 * j + kk % 2] = bf16(wv(kk, j));
            }
        }
        let mut c = vec![f32::NAN; TM * COLS];
        // SAFETY: AMX is available; the buffers hold the extents `panel` reads and writes.
        unsafe {
            let _tiles = Tiles::configure();
            panel(chunks, a.as_ptr(), lda, w.as_ptr(), c.as_mut_ptr());
        }
        let up = |b: u16| f32::from_bits(u32::from(b) << 16) as f64;
        for r in 0..TM {
            for j in 0..COLS {
                let want: f64 = (0..k)
                    .map(|kk| up(a[r * lda + kk]) * up(bf16(wv(kk, j))))
                    .sum();
                let got = c[r * COLS + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "row {r} col {j}: {got} vs {want}"
                );
            }
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
