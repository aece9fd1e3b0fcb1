//! The worker pool of one run: scoped threads, started as the work needs them (up to a
//! maximum), take jobs and send back their results; the calling thread schedules, and runs a
//! job itself when it is the only one (no thread hop) or when no thread could be started.

/// Stack size of worker threads (plugin code such as tensor libraries may need more than
/// the 2 MiB default).
const WORKER_STACK_BYTES: usize = 8 << 20;

/// The scheduling side of a run, driven by [`run`] on the calling thread.
pub(crate) trait Jobs {
    /// What a worker is given.
    type Job: Send;
    /// What a worker gives back.
    type Done: Send;
    /// True when no more jobs may start (those running still finish and are handed back).
    fn stopped(&self) -> bool;
    /// How many jobs could start now.
    fn ready(&self) -> usize;
    /// Takes the next job that can start now.
    fn next(&mut self) -> Option<Self::Job>;
    /// Takes a finished job's result (it may make further jobs ready).
    fn finish(&mut self, done: Self::Done);
}

/// Runs `jobs` to the end with at most `max_workers` threads (at least one) calling `work`.
/// Returns when no job is running and none can start (or all are stopped).
pub(crate) fn run<J: Jobs>(
    jobs: &mut J,
    max_workers: usize,
    work: &(dyn Fn(J::Job) -> J::Done + Sync),
) {
    let max_workers = max_workers.max(1);
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<J::Job>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<J::Done>();
        let mut workers = 0usize;
        let mut in_flight = 0usize;
        loop {
            if !jobs.stopped() {
                // One runnable job and nothing else running: run it here (no thread hop).
                // Its result takes the same path as a worker's, below.
                if in_flight == 0 && jobs.ready() == 1 {
                    if let Some(job) = jobs.next() {
                        in_flight += 1;
                        let _ = done_tx.send(work(job));
                    }
                }
                while let Some(job) = jobs.next() {
                    if workers < max_workers && workers < in_flight + 1 {
                        let (rx, tx) = (job_rx.clone(), done_tx.clone());
                        let spawned = std::thread::Builder::new()
                            .name(format!("odelt-worker-{workers}"))
                            .stack_size(WORKER_STACK_BYTES)
                            .spawn_scoped(scope, move || {
                                for job in rx.iter() {
                                    if tx.send(work(job)).is_err() {
                                        break;
                                    }
                                }
                            });
                        // Without a new thread the existing workers drain the queue.
                        if spawned.is_ok() {
                            workers += 1;
                        }
                    }
                    in_flight += 1;
                    if workers == 0 {
                        // No thread could be started: run it here.
                        let _ = done_tx.send(work(job));
                    } else {
                        let _ = job_tx.send(job);
                    }
                }
            }
            if in_flight == 0 {
                break;
            }
            let done = match done_rx.recv() {
                Ok(d) => d,
                Err(_) => break,
            };
            in_flight -= 1;
            jobs.finish(done);
        }
        drop(job_tx);
    });
}

#[cfg(test)]
mod tests {
    use std::collections::{HashSet, VecDeque};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Jobs `0..n`, job `i` ready once job `after[i]` (if any) finished; stops after a
    /// failing job.
    struct Chain {
        after: Vec<Option<usize>>,
        ready: VecDeque<usize>,
        finished: Vec<usize>,
        fail: Option<usize>,
        failed: bool,
    }

    impl Chain {
        fn new(after: Vec<Option<usize>>, fail: Option<usize>) -> Self {
            let ready = (0..after.len()).filter(|&i| after[i].is_none()).collect();
            Chain {
                after,
                ready,
                finished: Vec::new(),
                fail,
                failed: false,
            }
        }
    }

    impl Jobs for Chain {
        type Job = usize;
        type Done = usize;
        fn stopped(&self) -> bool {
            self.failed
        }
        fn ready(&self) -> usize {
            self.ready.len()
        }
        fn next(&mut self) -> Option<usize> {
            self.ready.pop_front()
        }
        fn finish(&mut self, i: usize) {
            self.finished.push(i);
            if Some(i) == self.fail {
                self.failed = true;
                return;
            }
            for (k, a) in self.after.iter().enumerate() {
                if *a == Some(i) {
                    self.ready.push_back(k);
                }
            }
        }
    }

    #[test]
    fn runs_every_job_after_its_dependency() {
        // 0 → 1 → 2 and 3, 4, 5 independent.
        let mut jobs = Chain::new(vec![None, Some(0), Some(1), None, None, None], None);
        let threads = Mutex::new(HashSet::new());
        run(&mut jobs, 4, &|i| {
            threads
                .lock()
                .unwrap()
                .insert(std::thread::current().name().map(str::to_string));
            std::thread::sleep(Duration::from_millis(5));
            i
        });
        let pos = |i| jobs.finished.iter().position(|&x| x == i).unwrap();
        assert_eq!(jobs.finished.len(), 6);
        assert!(pos(0) < pos(1) && pos(1) < pos(2));
        let threads = threads.into_inner().unwrap();
        let workers = threads
            .iter()
            .filter(|t| t.as_deref().is_some_and(|n| n.starts_with("odelt-worker-")))
            .count();
        assert!(
            (1..=4).contains(&workers),
            "at most max_workers threads: {threads:?}"
        );
    }

    #[test]
    fn a_lone_job_runs_on_the_calling_thread() {
        let mut jobs = Chain::new(vec![None, Some(0)], None);
        let caller = std::thread::current().id();
        let on_caller = AtomicUsize::new(0);
        run(&mut jobs, 8, &|i| {
            if std::thread::current().id() == caller {
                on_caller.fetch_add(1, Ordering::SeqCst);
            }
            i
        });
        assert_eq!(jobs.finished, vec![0, 1]);
        assert_eq!(on_caller.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn nothing_starts_after_a_stop_but_running_jobs_finish() {
        // 0 fails; 1 and 2 (ready with it) still finish; 3 (after 1) never starts.
        let mut jobs = Chain::new(vec![None, None, None, Some(1)], Some(0));
        run(&mut jobs, 1, &|i| {
            if i != 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            i
        });
        let mut finished = jobs.finished.clone();
        finished.sort();
        assert_eq!(finished, vec![0, 1, 2]);
    }

    #[test]
    fn no_jobs_returns_at_once() {
        let mut jobs = Chain::new(vec![], None);
        run(&mut jobs, 2, &|i| i);
        assert!(jobs.finished.is_empty());
    }
}
