//! The machine: its description, the process's CPU share, and the reference matmul the forward is compared with.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use odelt_nodes::model::packed::{Bf16Products, CpuKernels, Epilogue, PackedLinear, WeightFormat};
use odelt_nodes::util::XorShift;

use crate::model;

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Which kernels candle's CPU matmul runs on this machine: `gemm` 0.19 picks them at run time, AVX-512 when the
/// CPU has `avx512f` (odelt-nodes enables gemm's `x86-v4` feature for this), else AVX2/FMA, else scalar.
pub fn gemm_kernel(device: &Device) -> &'static str {
    if !device.is_cpu() {
        return "the device's BLAS";
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "gemm avx512f (x86-v4)";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "gemm avx2/fma (x86-v3)";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return "gemm neon";
    }
    #[allow(unreachable_code)]
    "gemm scalar"
}

/// CPU seconds over (wall seconds x cores); NaN when the wall time is too short for the 10 ms tick of
/// /proc/self/stat.
pub fn cpu_share(cpu_s: f64, wall_s: f64, cores: usize) -> f64 {
    if wall_s < 1.0 {
        f64::NAN
    } else {
        cpu_s / (wall_s * cores.max(1) as f64)
    }
}

/// A reference: a square matmul on random inputs, timed in bursts of back-to-back products lasting at least
/// [`RefMatmul::BURST_S`], so that on a shared machine its samples see the same kind of preemption as the
/// seconds-long forwards (a single 40 ms product often fits between two preemptions and flatters the reference).
/// On the CPU the references are candle's matmul (the `gemm` crate) and, where they run, the packed f32 and bf16
/// layers of the fused forward ([`RefMatmul::packed`]) and the system BLAS's `sgemm` of a `blas` build
/// ([`RefMatmul::blas`]): the forward is stated against the best of its precision.
pub struct RefMatmul {
    a: Tensor,
    b: Tensor,
    a_host: Vec<f32>,
    host: Host,
    device: Device,
    /// What multiplies (for the report).
    pub kernel: String,
    /// The precision of the product.
    pub format: WeightFormat,
    /// Its operands and accumulation, for the report (`f32`, `bf16 x bf16 -> f32`, ...).
    pub operands: &'static str,
    /// Products per timed burst.
    pub per_burst: usize,
}

impl RefMatmul {
    const BURST_S: f64 = 0.25;

    /// candle's matmul in f32 on `device`.
    pub fn new(n: usize, device: &Device) -> Result<Self> {
        Self::build(n, device, Multiplier::Candle(DType::F32))
    }

    /// candle's matmul in bf16 on `device` (on a GPU, cuBLAS's bf16 GEMM with f32 accumulation): the reference of a
    /// bf16 forward off the CPU.
    pub fn bf16(n: usize, device: &Device) -> Result<Self> {
        Self::build(n, device, Multiplier::Candle(DType::BF16))
    }

    /// The packed CPU layer of the fused forward, in `format`.
    pub fn packed(n: usize, format: WeightFormat, kernels: CpuKernels) -> Result<Self> {
        Self::build(n, &Device::Cpu, Multiplier::Packed(format, kernels))
    }

    /// The system BLAS's `sgemm` (a build with the `blas` feature).
    pub fn blas(n: usize) -> Result<Self> {
        Self::build(n, &Device::Cpu, Multiplier::Blas)
    }

    fn build(n: usize, device: &Device, host: Multiplier) -> Result<Self> {
        let mut rng = XorShift::new(11);
        let a: Vec<f32> = (0..n * n).map(|_| rng.next_f32()).collect();
        let b: Vec<f32> = (0..n * n).map(|_| rng.next_f32()).collect();
        let mut operands = "f32";
        let mut dtype = DType::F32;
        let (host, kernel, format) = match host {
            Multiplier::Candle(DType::F32) => (
                Host::Candle,
                gemm_kernel(device).to_string(),
                WeightFormat::F32,
            ),
            Multiplier::Candle(other) => {
                dtype = other;
                operands = "bf16 x bf16 -> bf16, f32 accumulation";
                (
                    Host::Candle,
                    gemm_kernel(device).to_string(),
                    WeightFormat::Bf16,
                )
            }
            Multiplier::Blas => (
                Host::Blas {
                    b: b.clone(),
                    c: std::cell::RefCell::new(vec![0.0; n * n]),
                },
                format!(
                    "system BLAS sgemm ({})",
                    odelt_nodes::model::blas::library().unwrap_or("not built")
                ),
                WeightFormat::F32,
            ),
            Multiplier::Packed(format, kernels) => {
                let layer = PackedLinear::pack(&b, &vec![0.0; n], n, n, format, kernels)?;
                let name = match (format, layer.bf16_products()) {
                    (WeightFormat::F32, _) if kernels == CpuKernels::Avx2 => {
                        "odelt packed f32 (avx2)"
                    }
                    (WeightFormat::F32, _) => "odelt packed f32",
                    (WeightFormat::Bf16, Some(Bf16Products::Dot | Bf16Products::Amx)) => {
                        operands = "bf16 x bf16 -> f32";
                        "odelt packed bf16"
                    }
                    (WeightFormat::Bf16, _) => {
                        operands = "bf16 weights x f32 -> f32";
                        "odelt packed bf16"
                    }
                };
                (Host::Packed(layer), name.to_string(), format)
            }
        };
        let mut r = RefMatmul {
            a: Tensor::from_slice(&a, (n, n), device)?.to_dtype(dtype)?,
            b: Tensor::from_vec(b, (n, n), device)?.to_dtype(dtype)?,
            a_host: a,
            host,
            device: device.clone(),
            kernel,
            format,
            operands,
            per_burst: 1,
        };
        // Warm-up, then size the bursts from the fastest of a few single products.
        let single = r.time(3)?.into_iter().fold(f64::INFINITY, f64::min);
        r.per_burst = ((Self::BURST_S / single.max(1e-6)).ceil() as usize).clamp(1, 1000);
        Ok(r)
    }

    /// Seconds per product, one value per burst, for `bursts` bursts.
    pub fn time(&self, bursts: usize) -> Result<Vec<f64>> {
        let n = self.a.dim(0)?;
        let mut times = Vec::with_capacity(bursts);
        for _ in 0..bursts {
            let t0 = Instant::now();
            for _ in 0..self.per_burst {
                match &self.host {
                    Host::Packed(layer) => drop(layer.forward(&self.a_host, n, Epilogue::Bias)?),
                    Host::Blas { b, c } => odelt_nodes::model::blas::sgemm(
                        n,
                        n,
                        n,
                        &self.a_host,
                        b,
                        &mut c.borrow_mut(),
                    )?,
                    Host::Candle => {
                        let c = self.a.matmul(&self.b)?;
                        model::sync(&self.device)?;
                        drop(c);
                    }
                }
            }
            times.push(t0.elapsed().as_secs_f64() / self.per_burst as f64);
        }
        Ok(times)
    }
}

/// Which matmul a [`RefMatmul`] times.
enum Multiplier {
    /// candle's matmul in this dtype (f32 or bf16).
    Candle(DType),
    Blas,
    Packed(WeightFormat, CpuKernels),
}

/// What multiplies a [`RefMatmul`] besides candle.
enum Host {
    Candle,
    Packed(PackedLinear),
    /// The right operand and the (reused) output of the system BLAS's `sgemm`.
    Blas {
        b: Vec<f32>,
        c: std::cell::RefCell<Vec<f32>>,
    },
}

/// Median (mean of the middle two for an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn the_bf16_reference_multiplies_in_bf16() {
        let r = RefMatmul::bf16(32, &Device::Cpu).unwrap();
        assert_eq!(
            (r.format, r.a.dtype(), r.b.dtype()),
            (WeightFormat::Bf16, DType::BF16, DType::BF16)
        );
        assert!(r.operands.starts_with("bf16"), "{}", r.operands);
        let times = r.time(2).unwrap();
        assert!(times.len() == 2 && times.iter().all(|&t| t > 0.0));
        let f = RefMatmul::new(32, &Device::Cpu).unwrap();
        assert_eq!(
            (f.format, f.a.dtype(), f.operands),
            (WeightFormat::F32, DType::F32, "f32")
        );
    }
}
