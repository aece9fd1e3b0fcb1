//! Learning-rate schedule of the official trainer (spec §5.3), with a configurable warm-up: linear warm-up from 0,
//! constant until 90 % of the run, then a cosine decay to 0 over the last 10 %.

/// The learning rate at `step` (0-based) of a run of `total` steps.
pub fn lr_at(step: u64, total: u64, peak: f64, warmup: u64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay_start = (total as f64 * 0.9).floor() as u64;
    if step < decay_start || total <= decay_start {
        return peak;
    }
    let frac = (step - decay_start) as f64 / (total - decay_start) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * frac.min(1.0)).cos())
}

/// EMA decay at `step`: the usual warm-up `(1 + s) / (10 + s)` capped at `max`, so the early teacher follows
/// the fast-changing weights.
pub fn ema_decay(step: u64, max: f64) -> f64 {
    ((1 + step) as f64 / (10 + step) as f64).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_constant_cosine() {
        assert!((lr_at(0, 100, 1.0, 10) - 0.1).abs() < 1e-12);
        assert_eq!(lr_at(50, 100, 1.0, 10), 1.0);
        assert_eq!(lr_at(90, 100, 1.0, 10), 1.0);
        assert!(lr_at(95, 100, 1.0, 10) < 0.6);
        assert!(lr_at(99, 100, 1.0, 10) < 0.05);
        assert!(ema_decay(0, 0.999) < 0.2);
        assert_eq!(ema_decay(100_000, 0.999), 0.999);
    }
}
