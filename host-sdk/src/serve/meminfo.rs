//! The machine's memory, read from Linux's `/proc/meminfo` (zeros where it is missing, as on
//! other systems).

/// `(total, available)` RAM in bytes.
pub(crate) fn ram() -> (u64, u64) {
    parse(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
}

/// `(MemTotal, MemAvailable)` of a `/proc/meminfo` text, in bytes (a field that is missing
/// or unreadable counts 0).
fn parse(text: &str) -> (u64, u64) {
    let field = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_and_available_in_bytes() {
        let text = "MemTotal:       16318412 kB\nMemFree:         1234567 kB\n\
                    MemAvailable:    8000000 kB\nBuffers:          100000 kB\n";
        assert_eq!(parse(text), (16318412 * 1024, 8000000 * 1024));
    }

    #[test]
    fn missing_or_bad_fields_count_zero() {
        assert_eq!(parse(""), (0, 0));
        assert_eq!(parse("MemTotal: lots kB\nMemAvailable: 2 kB\n"), (0, 2048));
        // `MemAvailable:` is not taken for `MemTotal:` (the whole key with its colon).
        assert_eq!(parse("MemTotalX: 5 kB\nMemAvailable: 1 kB\n"), (0, 1024));
    }

    #[test]
    fn this_machine_answers_without_failing() {
        let (total, free) = ram();
        if cfg!(target_os = "linux") {
            assert!(free <= total);
        }
    }
}
