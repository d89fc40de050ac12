//! Deadlines that cannot panic.

use std::time::{Duration, Instant};

/// When a wait of `timeout` starting now ends, or `None` when that is past
/// what the clock can represent (`Duration::MAX`, say): such a wait never
/// ends, which is what the caller meant. `Instant::now() + timeout` would
/// panic instead; crossbeam-channel treats its timeouts the same way.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_means_no_deadline() {
        assert_eq!(deadline(Duration::MAX), None);
        let soon = deadline(Duration::from_secs(1)).unwrap();
        assert!(soon > Instant::now());
    }
}
