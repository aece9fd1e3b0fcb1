//! Small synchronisation helpers shared by the executor and the server.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the guard when another thread panicked while holding it (the data
/// these mutexes guard stays consistent between statements, so a poisoned lock is used as is).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_from_poisoning() {
        let m = Mutex::new(1);
        let r = std::panic::catch_unwind(|| {
            let _g = m.lock().unwrap();
            panic!("poison it");
        });
        assert!(r.is_err());
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
