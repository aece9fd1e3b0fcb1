//! Opt-in per-stage wall-clock timing of the forward (used by `odelt-bench --profile`).
//!
//! Off by default, when each stage boundary costs one relaxed atomic load. When on, every stage of the forward
//! (the steps of the fused block, each reference block as a whole, the embedding, the ODE_l updates, the final
//! layer) adds its elapsed time to a per-thread table that [`take`] drains. On the CPU candle ops are synchronous, so the
//! times are per op; on an asynchronous device (CUDA) they only measure kernel launches.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static TIMES: RefCell<Vec<StageTime>> = const { RefCell::new(Vec::new()) };
}

/// Accumulated time of one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTime {
    pub name: &'static str,
    pub seconds: f64,
    pub calls: u64,
}

/// Turns stage timing on or off (process-wide).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether stage timing is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// This thread's accumulated stage times, in first-seen order; resets them.
pub fn take() -> Vec<StageTime> {
    TIMES.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

fn record(name: &'static str, seconds: f64) {
    TIMES.with(|t| {
        let mut t = t.borrow_mut();
        match t.iter_mut().find(|s| s.name == name) {
            Some(s) => {
                s.seconds += seconds;
                s.calls += 1;
            }
            None => t.push(StageTime {
                name,
                seconds,
                calls: 1,
            }),
        }
    });
}

/// A stopwatch over consecutive stages: each [`Laps::lap`] charges the time since the previous one.
pub(crate) struct Laps(Option<Instant>);

impl Laps {
    pub(crate) fn start() -> Self {
        Laps(ENABLED.load(Ordering::Relaxed).then(Instant::now))
    }

    pub(crate) fn lap(&mut self, name: &'static str) {
        if let Some(t) = self.0 {
            let now = Instant::now();
            record(name, (now - t).as_secs_f64());
            self.0 = Some(now);
        }
    }
}

/// Runs `f` as one stage named `name`.
#[inline]
pub(crate) fn timed<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let mut laps = Laps::start();
    let out = f();
    laps.lap(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_accumulate_only_when_enabled() {
        // Thread-local table: this test's thread sees only its own records.
        set_enabled(false);
        let mut l = Laps::start();
        l.lap("a");
        assert!(take().is_empty());
        set_enabled(true);
        let mut l = Laps::start();
        l.lap("a");
        l.lap("b");
        l.lap("a");
        assert_eq!(timed("c", || 7), 7);
        set_enabled(false);
        let t = take();
        assert_eq!(
            t.iter().map(|s| (s.name, s.calls)).collect::<Vec<_>>(),
            [("a", 2), ("b", 1), ("c", 1)]
        );
        assert!(take().is_empty());
    }
}
