//! Small helpers shared by the library and its binaries: process CPU time and a cheap deterministic random stream.

/// CPU time (user + system, all threads) used by this process so far, in seconds (Linux `/proc/self/stat`, 100 Hz
/// ticks); NaN elsewhere.
pub fn process_cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    parse_stat_cpu_seconds(&s)
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds.
fn parse_stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, i.e. 12 and 13 after the state field (index 0 here).
    match (
        f.get(11).and_then(|v| v.parse::<f64>().ok()),
        f.get(12).and_then(|v| v.parse::<f64>().ok()),
    ) {
        (Some(u), Some(st)) => (u + st) / 100.0,
        _ => f64::NAN,
    }
}

/// A deterministic xorshift64* stream: cheap, reproducible everywhere, and not meant for statistics (benchmark
/// inputs, synthetic test weights).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
    }
}

/// 64-bit FNV-1a hash of a string (a stable seed derived from a name).
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let line = "42 (odelt bench) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_stat_cpu_seconds(line), 3.0);
        assert!(parse_stat_cpu_seconds("garbage").is_nan());
        let own = process_cpu_seconds();
        assert!(own.is_nan() || own >= 0.0);
    }

    #[test]
    fn xorshift_is_deterministic_and_in_range() {
        let a: Vec<f32> = (0..1000)
            .scan(XorShift::new(3), |r, _| Some(r.next_f32()))
            .collect();
        let b: Vec<f32> = (0..1000)
            .scan(XorShift::new(3), |r, _| Some(r.next_f32()))
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.1, "{mean}");
        assert_ne!(fnv1a("a"), fnv1a("b"));
    }
}
