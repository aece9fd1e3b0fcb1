//! Fréchet distance between two Gaussians fitted to feature sets:
//! `FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)`, in f64, with the matrix square roots from
//! a cyclic Jacobi eigen solver for symmetric matrices (no LAPACK).

use crate::error::{Error, Result};

/// Mean and covariance (unbiased, `n - 1`) of `n` feature vectors of width `d` (row-major `n x d`).
#[derive(Debug, Clone)]
pub struct Gaussian {
    pub dim: usize,
    pub mean: Vec<f64>,
    /// Row-major `d x d`.
    pub cov: Vec<f64>,
    pub count: usize,
}

impl Gaussian {
    pub fn fit(features: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || !features.len().is_multiple_of(dim) {
            return Err(Error::invalid(format!(
                "features: {} values are not rows of width {dim}",
                features.len()
            )));
        }
        let n = features.len() / dim;
        if n < 2 {
            return Err(Error::invalid(
                "a covariance needs at least 2 feature vectors",
            ));
        }
        let mut mean = vec![0f64; dim];
        for r in features.chunks(dim) {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0f64; dim * dim];
        let mut c = vec![0f64; dim];
        for r in features.chunks(dim) {
            for k in 0..dim {
                c[k] = r[k] as f64 - mean[k];
            }
            for i in 0..dim {
                let ci = c[i];
                if ci == 0.0 {
                    continue;
                }
                let row = &mut cov[i * dim..(i + 1) * dim];
                for j in i..dim {
                    row[j] += ci * c[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / (n - 1) as f64;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(Gaussian {
            dim,
            mean,
            cov,
            count: n,
        })
    }
}

/// Eigen-decomposition of a symmetric `n x n` matrix (row-major) by cyclic Jacobi rotations.
/// Returns `(eigenvalues, eigenvectors)` with eigenvector `k` in column `k` (row-major `n x n`).
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if a.len() != n * n {
        return Err(Error::invalid(format!(
            "eigen: {} values for a {n}x{n} matrix",
            a.len()
        )));
    }
    let mut m = a.to_vec();
    // Symmetrise (guards against round-off asymmetry in the input).
    for i in 0..n {
        for j in i + 1..n {
            let s = 0.5 * (m[i * n + j] + m[j * n + i]);
            m[i * n + j] = s;
            m[j * n + i] = s;
        }
    }
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * norm.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let app = m[p * n + p];
                let aqq = m[q * n + q];
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- J^T A J on rows/columns p, q.
                for k in 0..n {
                    let akp = m[k * n + p];
                    let akq = m[k * n + q];
                    m[k * n + p] = c * akp - s * akq;
                    m[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = m[p * n + k];
                    let aqk = m[q * n + k];
                    m[p * n + k] = c * apk - s * aqk;
                    m[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let vals = (0..n).map(|i| m[i * n + i]).collect();
    Ok((vals, v))
}

/// Square root of a symmetric positive semi-definite matrix (negative eigenvalues from round-off clamp to 0).
pub fn sqrtm_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let (vals, v) = symmetric_eigen(a, n)?;
    let s: Vec<f64> = vals.iter().map(|&x| x.max(0.0).sqrt()).collect();
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            let mut acc = 0.0;
            for k in 0..n {
                acc += v[i * n + k] * s[k] * v[j * n + k];
            }
            out[i * n + j] = acc;
        }
    }
    Ok(out)
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..n {
                out[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    out
}

/// The Fréchet distance between two fitted Gaussians.
pub fn frechet_distance(g1: &Gaussian, g2: &Gaussian) -> Result<f64> {
    let n = g1.dim;
    if g2.dim != n {
        return Err(Error::invalid(format!(
            "Fréchet distance between {n}-d and {}-d features",
            g2.dim
        )));
    }
    let mean_term: f64 = g1
        .mean
        .iter()
        .zip(&g2.mean)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let tr1: f64 = (0..n).map(|i| g1.cov[i * n + i]).sum();
    let tr2: f64 = (0..n).map(|i| g2.cov[i * n + i]).sum();
    let s1 = sqrtm_psd(&g1.cov, n)?;
    let m = matmul(&matmul(&s1, &g2.cov, n), &s1, n);
    let (vals, _) = symmetric_eigen(&m, n)?;
    let tr_sqrt: f64 = vals.iter().map(|&x| x.max(0.0).sqrt()).sum();
    Ok((mean_term + tr1 + tr2 - 2.0 * tr_sqrt).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn eigen_reconstructs_matrix() {
        let n = 6;
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = ((i * 7 + j * 3) % 5) as f64 + if i == j { 4.0 } else { 0.0 };
            }
        }
        let at: Vec<f64> = (0..n * n).map(|k| a[(k % n) * n + k / n]).collect();
        let sym: Vec<f64> = a.iter().zip(&at).map(|(x, y)| 0.5 * (x + y)).collect();
        let (vals, v) = symmetric_eigen(&sym, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| v[i * n + k] * vals[k] * v[j * n + k]).sum();
                assert!((r - sym[i * n + j]).abs() < 1e-10);
                let o: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                assert!((o - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
        let trace: f64 = (0..n).map(|i| sym[i * n + i]).sum();
        assert!((vals.iter().sum::<f64>() - trace).abs() < 1e-10);
        // sqrt(A)^2 = A for an SPD matrix.
        let s = sqrtm_psd(&[4.0, 1.0, 1.0, 3.0], 2).unwrap();
        let s2 = matmul(&s, &s, 2);
        for (x, y) in s2.iter().zip([4.0, 1.0, 1.0, 3.0]) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn identical_sets_have_zero_distance() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let f: Vec<f32> = (0..500 * 8)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let g = Gaussian::fit(&f, 8).unwrap();
        assert!(frechet_distance(&g, &g).unwrap() < 1e-8);
    }

    #[test]
    fn diagonal_gaussians_match_closed_form() {
        // FD = |m1-m2|^2 + sum (s1 - s2)^2 for diagonal covariances with std s1, s2.
        let d = 3;
        let g = |m: [f64; 3], s: [f64; 3]| Gaussian {
            dim: d,
            mean: m.to_vec(),
            cov: (0..d * d)
                .map(|k| {
                    if k / d == k % d {
                        s[k / d] * s[k / d]
                    } else {
                        0.0
                    }
                })
                .collect(),
            count: 0,
        };
        let a = g([0.0, 1.0, 2.0], [1.0, 2.0, 0.5]);
        let b = g([1.0, 1.0, 0.0], [2.0, 2.0, 1.5]);
        let want = 1.0 + 0.0 + 4.0 + 1.0 + 0.0 + 1.0;
        assert!((frechet_distance(&a, &b).unwrap() - want).abs() < 1e-9);
        // And sampled features converge to it.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let sample = |m: [f64; 3], s: [f64; 3], rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            (0..20000 * d)
                .map(|k| {
                    let z: f64 = StandardNormal.sample(rng);
                    (m[k % d] + s[k % d] * z) as f32
                })
                .collect()
        };
        let fa = Gaussian::fit(&sample([0.0, 1.0, 2.0], [1.0, 2.0, 0.5], &mut rng), d).unwrap();
        let fb = Gaussian::fit(&sample([1.0, 1.0, 0.0], [2.0, 2.0, 1.5], &mut rng), d).unwrap();
        assert!((frechet_distance(&fa, &fb).unwrap() - want).abs() < 0.15);
    }
}
