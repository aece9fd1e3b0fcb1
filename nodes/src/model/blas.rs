//! The system CBLAS of the optional `blas` feature (OpenBLAS or BLIS, linked by `nodes/build.rs`): `sgemm` for the
//! dense layers of the fused CPU path where odelt's AVX-512 tiles don't run ([`super::packed::CpuKernels::Blas`],
//! the default on CPUs without AVX-512 in a `blas` build), and a reference GEMM for `odelt-bench`.
//!
//! The library runs its own threads (OpenBLAS: one per core unless `OPENBLAS_NUM_THREADS` says otherwise); the
//! rayon pool that called it waits meanwhile. Attention's small per-head products stay on the `gemm` crate, one
//! per rayon task, so that the library's threads and rayon's never contend inside one parallel region.

#[cfg(feature = "blas")]
mod ffi {
    use std::os::raw::c_int;

    pub const ROW_MAJOR: c_int = 101;
    pub const NO_TRANS: c_int = 111;

    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn cblas_sgemm(
            layout: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
    }
}

use crate::error::{Error, Result};

/// Whether this build links a CBLAS.
pub const LINKED: bool = cfg!(feature = "blas");

/// The pkg-config package and version linked (`"openblas 0.3.21"`), or `None` in a build without `blas`.
pub fn library() -> Option<&'static str> {
    #[cfg(feature = "blas")]
    return Some(env!("ODELT_BLAS_LIB"));
    #[cfg(not(feature = "blas"))]
    None
}

/// `c[m, n] = a[m, k] · b[k, n]`, every matrix row-major and dense (`c`'s previous contents are overwritten).
pub fn sgemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    if a.len() != m * k || b.len() != k * n || c.len() != m * n {
        return Err(Error::invalid(format!(
            "sgemm [{m}, {k}] x [{k}, {n}] got {}, {} and {} values",
            a.len(),
            b.len(),
            c.len()
        )));
    }
    let dims: Vec<i32> = [m, n, k]
        .iter()
        .map(|&d| i32::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::invalid(format!(
                "sgemm [{m}, {k}] x [{k}, {n}] exceeds CBLAS's int extents"
            ))
        })?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    run(dims[0], dims[1], dims[2], a, b, c)
}

#[cfg(feature = "blas")]
fn run(m: i32, n: i32, k: i32, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    // SAFETY: the lengths were checked against the extents, and the leading dimensions are the dense row lengths.
    unsafe {
        ffi::cblas_sgemm(
            ffi::ROW_MAJOR,
            ffi::NO_TRANS,
            ffi::NO_TRANS,
            m,
            n,
            k,
            1.0,
            a.as_ptr(),
            k.max(1),
            b.as_ptr(),
            n,
            0.0,
            c.as_mut_ptr(),
            n,
        );
    }
    Ok(())
}

#[cfg(not(feature = "blas"))]
fn run(_: i32, _: i32, _: i32, _: &[f32], _: &[f32], _: &mut [f32]) -> Result<()> {
    Err(Error::invalid(
        "this build has no system BLAS (rebuild with `--features blas`)".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgemm_matches_a_naive_product_or_says_it_is_not_built() {
        let (m, n, k) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![f32::NAN; m * n];
        let r = sgemm(m, n, k, &a, &b, &mut c);
        if !LINKED {
            assert!(r.unwrap_err().to_string().contains("--features blas"));
            return;
        }
        r.unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!(
                    (c[i * n + j] - want).abs() < 1e-5,
                    "({i}, {j}): {} vs {want}",
                    c[i * n + j]
                );
            }
        }
        assert!(sgemm(m, n, k, &a[1..], &b, &mut c).is_err());
    }
}
