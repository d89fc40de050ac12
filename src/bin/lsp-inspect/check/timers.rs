//! The timer-based rules (declaring a connection lost, heartbeats, the
//! back-off schedule) and their arithmetic. Each allows `jitter` for an
//! endpoint's late epoch timer, and any time the proxy itself was held up
//! inside the stretch it judges.

use std::time::Duration;

use liveseq::proto::Message;

use super::rules::{kind_name, ms, ordinal, Origin, Rule, Seen};
use super::side::{Side, SideState, Tx};
use super::CheckParams;

/// The sender must have declared the connection lost epoch_limit epochs
/// after it last heard anything of it.
pub(super) fn check_lost(
    o: &Origin,
    p: &CheckParams,
    stalls: &[(Duration, Duration)],
    me: &mut SideState,
    msg: &Message<'_>,
    seen: &mut Seen,
) {
    let at = o.at;
    match me.last_heard {
        Some(heard) => {
            let limit = p
                .epoch
                .checked_mul(p.epoch_limit)
                .and_then(|d| d.checked_add(p.jitter))
                .unwrap_or(Duration::MAX)
                .saturating_add(stall_within(stalls, heard, at));
            if !me.lost_reported && at.saturating_sub(heard) > limit {
                me.lost_reported = true;
                o.report(
                    seen,
                    Rule::AfterLost,
                    format!(
                        "sent {} after hearing nothing of the connection for {} (epoch limit {} x {} + {} jitter): it must have declared the connection lost",
                        kind_name(msg),
                        ms(at - heard),
                        p.epoch_limit,
                        ms(p.epoch),
                        ms(p.jitter)
                    ),
                );
            }
        }
        // It has heard nothing we know of: treat now as its last
        // hearing, an upper bound.
        None => me.last_heard = Some(at),
    }
}

/// Each epoch in which a side heard nothing and sent no Data ends with a
/// heartbeat, so silence on both ways longer than two epochs (any such
/// stretch holds a whole epoch) is a skipped heartbeat, proven by the side
/// speaking again on the same connection. A client's Connects count as
/// sending (`last_client_sent`).
pub(super) fn check_silent(
    o: &Origin,
    p: &CheckParams,
    stalls: &[(Duration, Duration)],
    me: &SideState,
    last_client_sent: Option<Duration>,
    seen: &mut Seen,
) {
    let at = o.at;
    let last_sent = match o.from {
        Side::Client => later(me.last_sent, last_client_sent),
        Side::Server => me.last_sent,
    };
    if let Some(quiet_since) = later(last_sent, me.last_heard) {
        let allowed = p
            .epoch
            .checked_mul(2)
            .and_then(|d| d.checked_add(p.jitter))
            .unwrap_or(Duration::MAX)
            .saturating_add(stall_within(stalls, quiet_since, at));
        if at.saturating_sub(quiet_since) > allowed {
            o.report(
                seen,
                Rule::Silent,
                format!(
                    "sent nothing for {} while hearing nothing (at most 2 epochs of {} + {} jitter)",
                    ms(at - quiet_since),
                    ms(p.epoch),
                    ms(p.jitter)
                ),
            );
        }
    }
}

/// The back-off rule, for the latest transmission of Data `sn` (the last of
/// `tx.times`): reported once per message.
pub(super) fn check_backoff(
    o: &Origin,
    p: &CheckParams,
    stalls: &[(Duration, Duration)],
    sn: u64,
    tx: &mut Tx,
    seen: &mut Seen,
) {
    let j = tx.times.len() - 1;
    if tx.early_reported || j < 2 {
        return;
    }
    // Resends happen on epoch ticks: resend j may come at most one
    // late tick (the jitter) sooner than the schedule after resend i.
    let now = tx.times[j];
    for i in 1..j {
        let epochs = required_epochs(p.max_backoff, i, j);
        let due = u32::try_from(epochs)
            .ok()
            .and_then(|e| p.epoch.checked_mul(e))
            .unwrap_or(Duration::MAX);
        let gap = now.saturating_sub(tx.times[i]);
        let slack =
            p.jitter
                .saturating_add(stall_within(stalls, tx.times[i].saturating_sub(due), now));
        if gap.saturating_add(slack) < due {
            tx.early_reported = true;
            o.report(
                seen,
                Rule::EarlyRetransmit,
                format!(
                    "Data {sn} sent for the {} time {} after its {} transmission; back-off (max {}) allows no sooner than {epochs} epochs ({} less {} jitter)",
                    ordinal(j + 1),
                    ms(gap),
                    ordinal(i + 1),
                    p.max_backoff,
                    ms(due),
                    ms(p.jitter)
                ),
            );
            break;
        }
    }
}

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

fn later(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Epochs that must separate resend `i` from resend `j` (`1 <= i < j`,
/// transmission 0 being the first) under the back-off rule (docs/PROTOCOL.md, section 8.1): after
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
