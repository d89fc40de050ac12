//! The Data rules (integrity, window, unacknowledged limit, back-off) and
//! the round-trip samples taken from acknowledgements.

use std::time::Duration;

use liveseq::proto::{checksum, Message, MsgType};

use super::rules::{ms, ordinal};
use super::side::{SideState, Tx, MAX_TIMES};
use super::timers::{required_epochs, stall_within};
use super::{CheckParams, Rule, Seen};

/// Round-trip samples through the proxy: from delivering a first
/// transmission of Data to one side until that side's acknowledgement of it
/// came back, per side.
#[derive(Debug, Default, Clone)]
pub struct RttSamples {
    /// Samples of the client's half (proxy to client and back).
    pub client: Vec<Duration>,
    /// Samples of the server's half.
    pub server: Vec<Duration>,
}

/// Samples kept per side for the RTT estimate.
pub(super) const MAX_RTT_SAMPLES: usize = 100_000;

/// Whether a receiver would take `msg`: anything but Data that fails the
/// integrity rules.
pub(super) fn intact(msg: &Message<'_>) -> bool {
    if msg.kind != MsgType::Data {
        return true;
    }
    match usize::try_from(msg.size) {
        Ok(size) if size <= msg.payload.len() => {
            checksum(msg.conn_id, msg.seq_num, msg.size, &msg.payload[..size]) == msg.checksum
        }
        _ => false,
    }
}

/// The Data rules: integrity, window, unacknowledged limit, back-off.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_data(
    at: Duration,
    p: &CheckParams,
    stalls: &[(Duration, Duration)],
    isn: Option<u64>,
    me: &mut SideState,
    msg: &Message<'_>,
    seen: &mut Seen,
    report: &mut dyn FnMut(&mut Seen, Rule, String),
) {
    let sn = msg.seq_num;
    let len = msg.payload.len() as u64;
    if len != msg.size {
        report(
            seen,
            Rule::BadSize,
            format!("Data {sn} has Size {} but {len} payload bytes", msg.size),
        );
    }
    if !intact(msg) {
        if len >= msg.size {
            let want = checksum(msg.conn_id, sn, msg.size, &msg.payload[..msg.size as usize]);
            report(
                seen,
                Rule::BadChecksum,
                format!(
                    "Data {sn} has checksum {} where {want} is due",
                    msg.checksum
                ),
            );
        }
        // A receiver drops it: it tells nothing about windows.
        return;
    }

    if let Some(tx) = me.sent.get_mut(&sn) {
        seen.retransmission = tx.times.len() as u32;
        me.rtt_pending.remove(&sn); // Karn: no samples from resent messages
        if tx.times.len() >= MAX_TIMES {
            return;
        }
        tx.times.push(at);
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
                report(
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
        return;
    }
    if sn < me.forgotten_below {
        seen.retransmission = 1;
        return;
    }

    // A first transmission. `lo` is the first sequence number of this side;
    // with the ISN unknown, the lowest seen stands in (higher: lenient).
    let lo = match isn {
        Some(isn) if sn > isn => isn + 1,
        _ => me.sent.keys().next().copied().unwrap_or(sn).min(sn),
    };
    let n = me.acked.first_unacked(lo);
    let mut tx = Tx::default();
    if sn >= n.saturating_add(p.window) {
        tx.reported = true;
        report(
            seen,
            Rule::BeyondWindow,
            format!(
                "Data {sn} sent while {n} was unacknowledged: window {} allows at most {}",
                p.window,
                n.saturating_add(p.window - 1)
            ),
        );
    }
    // Data numbered below everything acknowledged has nothing in flight
    // before it (and an empty range: found by the hostile-traffic test).
    let in_flight = if n < sn {
        me.sent
            .range(n..sn)
            .filter(|(s, _)| !me.acked.contains(**s))
            .count() as u64
    } else {
        0
    };
    if in_flight >= p.max_unacked && !tx.reported {
        report(
            seen,
            Rule::MaxUnacked,
            format!(
                "Data {sn} sent while {in_flight} messages were unacknowledged (max unacked {})",
                p.max_unacked
            ),
        );
    }
    tx.times.push(at);
    me.sent.insert(sn, tx);
}
