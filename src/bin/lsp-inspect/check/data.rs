//! The Data and acknowledgement rules (integrity, window, unacknowledged
//! limit, acknowledging only what was sent; the back-off schedule is in
//! [`super::timers`]) and the round-trip samples taken from acknowledgements.

use std::time::Duration;

use liveseq::proto::{checksum, Message, MsgType};

use super::rules::{kind_name, Origin};
use super::side::{Side, SideState, Tx, MAX_SENT, MAX_TIMES};
use super::timers::check_backoff;
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
pub(super) fn check_data(
    o: &Origin,
    p: &CheckParams,
    stalls: &[(Duration, Duration)],
    isn: Option<u64>,
    me: &mut SideState,
    msg: &Message<'_>,
    seen: &mut Seen,
) {
    let sn = msg.seq_num;
    let len = msg.payload.len() as u64;
    if len != msg.size {
        o.report(
            seen,
            Rule::BadSize,
            format!("Data {sn} has Size {} but {len} payload bytes", msg.size),
        );
    }
    if !intact(msg) {
        if len >= msg.size {
            let want = checksum(msg.conn_id, sn, msg.size, &msg.payload[..msg.size as usize]);
            o.report(
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
        tx.times.push(o.at);
        me.times += 1;
        check_backoff(o, p, stalls, sn, tx, seen);
        return;
    }
    if sn < me.forgotten_below {
        seen.retransmission = 1;
        return;
    }
    check_first(o, p, isn, me, sn, seen);
}

/// The window and unacknowledged-limit rules, for the first transmission
/// of Data `sn`, which is remembered.
fn check_first(
    o: &Origin,
    p: &CheckParams,
    isn: Option<u64>,
    me: &mut SideState,
    sn: u64,
    seen: &mut Seen,
) {
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
        o.report(
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
        o.report(
            seen,
            Rule::MaxUnacked,
            format!(
                "Data {sn} sent while {in_flight} messages were unacknowledged (max unacked {})",
                p.max_unacked
            ),
        );
    }
    tx.times.push(o.at);
    me.times += 1;
    me.sent.insert(sn, tx);
}

/// The rule that an Ack or CAck acknowledges only Data the `other` side
/// sent; an acknowledgement of a first transmission gives a round-trip
/// sample.
pub(super) fn check_ack(
    o: &Origin,
    msg: &Message<'_>,
    other: &mut SideState,
    rtt: &mut RttSamples,
    seen: &mut Seen,
) {
    let sn = msg.seq_num;
    // Each unsent number is reported once; a peer spraying
    // numbers is reported on every one beyond what is remembered.
    let new = other.reported_acks.len() >= MAX_SENT || other.reported_acks.insert(sn);
    if !other.was_sent(sn) && new {
        o.report(
            seen,
            Rule::AckUnsent,
            format!(
                "{} {sn} acknowledges Data the {} never sent",
                kind_name(msg),
                o.from.other().name()
            ),
        );
    }
    if let Some(delivered) = other.rtt_pending.remove(&sn) {
        let samples = match o.from {
            Side::Client => &mut rtt.client,
            Side::Server => &mut rtt.server,
        };
        if samples.len() < MAX_RTT_SAMPLES {
            samples.push(o.at.saturating_sub(delivered));
        }
    }
}
