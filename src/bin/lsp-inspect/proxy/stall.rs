//! The stall watcher: notices when the proxy itself was held up, so that
//! the checker's timer rules can allow for it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::Shared;

/// The stall monitor's period, and the lateness it reports as a stall
/// (below it, the timer jitter covers it).
const STALL_TICK: Duration = Duration::from_millis(5);
const STALL_MIN: Duration = Duration::from_millis(10);

/// Watches for the proxy being held up: it wakes every [`STALL_TICK`] and
/// tells the checker whenever a wake-up came [`STALL_MIN`] or more late.
pub(super) fn stall_loop(shared: &Arc<Shared>) {
    let mut last = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(STALL_TICK);
        let now = Instant::now();
        if now.saturating_duration_since(last) >= STALL_TICK + STALL_MIN {
            let from = last.saturating_duration_since(shared.start);
            let to = now.saturating_duration_since(shared.start);
            shared.lock().checker.stalled(from, to);
        }
        last = now;
    }
}
