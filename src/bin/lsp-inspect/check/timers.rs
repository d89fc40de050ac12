//! The timer-based rules' arithmetic: the back-off schedule, and the time
//! the proxy itself was held up, which excuses an endpoint's timer as long.

use std::time::Duration;

/// Stall time within `from..to`.
pub(super) fn stall_within(
    stalls: &[(Duration, Duration)],
    from: Duration,
    to: Duration,
) -> Duration {
    let mut total = Duration::ZERO;
    for &(a, b) in stalls.iter().rev() {
        if b <= from {
            break;
        }
        let (a, b) = (a.max(from), b.min(to));
        if b > a {
            total += b - a;
        }
    }
    total
}

pub(super) fn later(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Epochs that must separate resend `i` from resend `j` (`1 <= i < j`,
/// transmission 0 being the first) under the back-off rule of SPEC: after
/// each resend the message waits `backoff + 1` epochs, `backoff` going
/// 0, 1, 2, 4, ... capped at `max_backoff`.
pub(super) fn required_epochs(max_backoff: u32, i: usize, j: usize) -> u64 {
    let mut backoff: u64 = 0;
    let mut total: u64 = 0;
    for k in 1..j {
        backoff = if backoff == 0 { 1 } else { backoff * 2 }.min(u64::from(max_backoff));
        if k >= i {
            total = total.saturating_add(backoff + 1);
        }
    }
    total
}
