//! The SPEC checker: an I/O-free judge of what each side of each connection
//! sent, fed with every datagram as the proxy received it ([`Checker::sent`])
//! and as the proxy passed it on ([`Checker::delivered`]).
//!
//! Every rule fires only when the traffic *proves* a breach. The checker
//! never knows what an endpoint knows, only bounds on it: an endpoint can
//! have heard at most what the proxy delivered to it, and has sent at least
//! what the proxy received from it. So a sender's oldest unacknowledged
//! message is at most the oldest one no delivered acknowledgement covers, it
//! has at least as many messages in flight as the proxy saw unacknowledged,
//! it heard last no later than the proxy's last delivery to it, and so on.
//! Timer-based rules allow `jitter` for an endpoint's late epoch timer.

mod connect;
mod data;
mod rules;
mod side;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use liveseq::proto::{DecodeError, Message, MsgType};

use connect::{Answer, Contested, Flow, TrackedConn, MAX_ANSWERS};
use data::{check_data, intact, MAX_RTT_SAMPLES};
use rules::{kind_name, ms};
use side::{SideState, MAX_SENT};
use timers::{later, stall_within};

pub use data::RttSamples;
pub use rules::{Rule, Seen, Violation};
pub use side::Side;

/// The protocol parameters the endpoints run with, and the timer slack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckParams {
    /// `EpochMillis` as a duration.
    pub epoch: Duration,
    /// `EpochLimit`.
    pub epoch_limit: u32,
    /// `WindowSize`.
    pub window: u64,
    /// `MaxUnackedMessages`.
    pub max_unacked: u64,
    /// `MaxBackOffInterval`.
    pub max_backoff: u32,
    /// How late an endpoint's epoch timer may fire (scheduling, load).
    pub jitter: Duration,
}

impl CheckParams {
    /// The default timer slack for an epoch length: 50 ms plus half an
    /// epoch. Generous on purpose: a loaded machine delays timer threads,
    /// and a false report costs more than a late one.
    pub fn default_jitter(epoch: Duration) -> Duration {
        Duration::from_millis(50).saturating_add(epoch / 2)
    }
}

/// Stall stretches remembered (older ones are forgotten: the timer rules
/// look back a few epochs at most).
const MAX_STALLS: usize = 4096;

/// The checker. See the module documentation.
#[derive(Debug)]
pub struct Checker {
    params: CheckParams,
    flows: HashMap<usize, Flow>,
    /// Which client address (flow) the server first gave each ConnID to.
    owners: HashMap<u32, usize>,
    /// (ConnID, flow) pairs reported as reused, each once.
    reused: HashSet<(u32, usize)>,
    rtt: RttSamples,
    /// Stretches in which the proxy itself was held up, oldest first.
    stalls: Vec<(Duration, Duration)>,
    stall_count: u64,
    stall_max: Duration,
}

impl Checker {
    /// A checker for endpoints running with `params`.
    pub fn new(params: CheckParams) -> Checker {
        Checker {
            params,
            flows: HashMap::new(),
            owners: HashMap::new(),
            reused: HashSet::new(),
            rtt: RttSamples::default(),
            stalls: Vec::new(),
            stall_count: 0,
            stall_max: Duration::ZERO,
        }
    }

    /// Notes that the proxy was held up (not scheduled) from `from` to `to`.
    /// A machine that starves the proxy may starve the endpoints' timers
    /// too, and the proxy's own timestamps bunch up after a stall: the
    /// timer rules add any stall time inside the stretch they judge.
    pub fn stalled(&mut self, from: Duration, to: Duration) {
        if to <= from {
            return;
        }
        self.stall_count += 1;
        self.stall_max = self.stall_max.max(to - from);
        match self.stalls.last_mut() {
            Some(last) if last.1 >= from => last.1 = last.1.max(to),
            _ => self.stalls.push((from, to)),
        }
        if self.stalls.len() > MAX_STALLS {
            self.stalls.drain(..MAX_STALLS / 2);
        }
    }

    /// How many stalls were noted, and the longest.
    pub fn stalls(&self) -> (u64, Duration) {
        (self.stall_count, self.stall_max)
    }

    /// The parameters it checks against.
    pub fn params(&self) -> &CheckParams {
        &self.params
    }

    /// Round-trip samples gathered so far.
    pub fn rtt(&self) -> &RttSamples {
        &self.rtt
    }

    /// Judges one datagram `from` one side of client address `flow`
    /// (a small number the caller gives each client address), numbered
    /// `datagram`, received by the proxy at `at`, before any fault.
    pub fn sent(
        &mut self,
        at: Duration,
        flow: usize,
        from: Side,
        datagram: usize,
        msg: Result<&Message<'_>, DecodeError>,
    ) -> Seen {
        let mut seen = Seen::default();
        let p = self.params;
        let report = |seen: &mut Seen, rule: Rule, conn: Option<u32>, detail: String| {
            seen.violations.push(Violation {
                rule,
                side: from,
                flow,
                conn,
                datagram,
                at,
                detail,
            });
        };
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                report(
                    &mut seen,
                    Rule::Malformed,
                    None,
                    format!("not an LSP message: {e}"),
                );
                return seen;
            }
        };
        let stalls = &self.stalls[..];
        let fl = self.flows.entry(flow).or_default();
        if msg.kind == MsgType::Connect {
            if from == Side::Client {
                if !fl.isns.contains(&msg.seq_num) {
                    fl.isns.push(msg.seq_num);
                }
                fl.last_client_sent = Some(at);
            }
            // Connect resends follow no schedule the checker holds them to.
            return seen;
        }
        let id = msg.conn_id;
        seen.conn = Some(id);
        let connect_isn = fl.isns.contains(&msg.seq_num).then_some(msg.seq_num);
        let is_connect_ack =
            from == Side::Server && msg.kind == MsgType::Ack && connect_isn.is_some();

        if from == Side::Server {
            match self.owners.get(&id) {
                Some(&owner) if owner != flow => {
                    if self.reused.len() < MAX_SENT && self.reused.insert((id, flow)) {
                        report(
                            &mut seen,
                            Rule::ConnIdReused,
                            Some(id),
                            format!("ConnID {id} was already given to another client address"),
                        );
                    }
                }
                Some(_) => {}
                None => {
                    self.owners.insert(id, flow);
                }
            }
        }

        if !fl.conns.contains_key(&id) {
            // Which Connect this connection answers: the one whose ISN its
            // first Ack carries, or the only one this address sent. With
            // several and no Ack to tell, the ISN stays unknown and the
            // checks that need it are lenient.
            let isn = if is_connect_ack {
                connect_isn
            } else if fl.isns.len() == 1 {
                fl.isns.first().copied()
            } else {
                None
            };
            let mut sides: [SideState; 2] = Default::default();
            sides[Side::Server.index()].last_heard = fl.last_connect_delivered;
            fl.conns.insert(
                id,
                TrackedConn {
                    isn,
                    sides,
                    client_connected: false,
                    server_validated: false,
                },
            );
        }

        // A repeated Connect answered with another ConnID is a breach only
        // if the older connection provably lived on: the server uses it
        // after giving out the newer one.
        if from == Side::Server {
            for c in fl.contested.iter_mut() {
                if c.older == id && !c.reported && at > c.at {
                    c.reported = true;
                    report(
                        &mut seen,
                        Rule::ConnectReanswered,
                        Some(id),
                        format!(
                            "Connect with ISN {} was answered with ConnID {} (datagram #{}) while connection {} from the same address was still live",
                            c.isn, c.newer, c.datagram, c.older
                        ),
                    );
                }
            }
            if let (true, Some(isn)) = (is_connect_ack, connect_isn) {
                let known = fl.answers.iter().any(|a| a.isn == isn && a.id == id);
                if !known {
                    let older = fl.answers.iter().find(|a| a.isn == isn).map(|a| a.id);
                    if let Some(older) = older.filter(|_| fl.contested.len() < MAX_ANSWERS) {
                        fl.contested.push(Contested {
                            older,
                            newer: id,
                            isn,
                            at,
                            datagram,
                            reported: false,
                        });
                    }
                    if fl.answers.len() < MAX_ANSWERS {
                        fl.answers.push(Answer { isn, id });
                    }
                }
            }
        }

        let Some(conn) = fl.conns.get_mut(&id) else {
            return seen;
        };
        // With ISN 0 an answer to the Connect and a heartbeat are the same
        // datagram: call it an answer until the client has been heard.
        seen.connect_ack = is_connect_ack && (msg.seq_num != 0 || !conn.server_validated);
        let isn = conn.isn;
        let applies_silent = match from {
            Side::Client => conn.client_connected,
            Side::Server => conn.server_validated,
        };
        let [client, server] = &mut conn.sides;
        let (me, other) = match from {
            Side::Client => (client, server),
            Side::Server => (server, client),
        };

        // The sender must have declared the connection lost epoch_limit
        // epochs after it last heard anything of it.
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
                    report(
                        &mut seen,
                        Rule::AfterLost,
                        Some(id),
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

        // Each epoch in which a side heard nothing and sent no Data ends
        // with a heartbeat, so silence on both ways longer than two epochs
        // (any such stretch holds a whole epoch) is a skipped heartbeat,
        // proven by the side speaking again on the same connection.
        if applies_silent {
            let last_sent = match from {
                Side::Client => later(me.last_sent, fl.last_client_sent),
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
                    report(
                        &mut seen,
                        Rule::Silent,
                        Some(id),
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
        me.last_sent = Some(at);
        if from == Side::Client {
            fl.last_client_sent = Some(at);
        }

        match msg.kind {
            MsgType::Connect => {}
            MsgType::Data => {
                check_data(
                    at,
                    &p,
                    stalls,
                    isn,
                    me,
                    msg,
                    &mut seen,
                    &mut |s, rule, detail| report(s, rule, Some(id), detail),
                );
            }
            MsgType::Ack if msg.seq_num == 0 => {} // a heartbeat
            MsgType::Ack if is_connect_ack => {}
            MsgType::Ack | MsgType::CAck => {
                let sn = msg.seq_num;
                // Each unsent number is reported once; a peer spraying
                // numbers is reported on every one beyond what is remembered.
                let new = other.reported_acks.len() >= MAX_SENT || other.reported_acks.insert(sn);
                if !other.was_sent(sn) && new {
                    report(
                        &mut seen,
                        Rule::AckUnsent,
                        Some(id),
                        format!(
                            "{} {sn} acknowledges Data the {} never sent",
                            kind_name(msg),
                            from.other().name()
                        ),
                    );
                }
                if let Some(delivered) = other.rtt_pending.remove(&sn) {
                    let samples = match from {
                        Side::Client => &mut self.rtt.client,
                        Side::Server => &mut self.rtt.server,
                    };
                    if samples.len() < MAX_RTT_SAMPLES {
                        samples.push(at.saturating_sub(delivered));
                    }
                }
            }
        }
        seen
    }

    /// Notes that the proxy passed a datagram on `to` one side of `flow`
    /// at `at` (after faults: what that side can have heard).
    pub fn delivered(
        &mut self,
        at: Duration,
        flow: usize,
        to: Side,
        msg: Result<&Message<'_>, DecodeError>,
    ) {
        let Ok(msg) = msg else { return };
        let Some(fl) = self.flows.get_mut(&flow) else {
            return;
        };
        // Whatever reaches an address may count as hearing for any of its
        // connections (a repeated Connect does; an implementation may count
        // more): crediting all of them only makes the timer rules lenient.
        for conn in fl.conns.values_mut() {
            conn.sides[to.index()].last_heard = Some(at);
        }
        if msg.kind == MsgType::Connect {
            if to == Side::Server {
                fl.last_connect_delivered = Some(at);
            }
            return;
        }
        let Some(conn) = fl.conns.get_mut(&msg.conn_id) else {
            return;
        };
        // Damaged Data proves nothing to its receiver: it is dropped unread.
        if intact(msg) {
            match to {
                Side::Client => conn.client_connected = true,
                Side::Server => conn.server_validated = true,
            }
        }
        let isn = conn.isn;
        let [client, server] = &mut conn.sides;
        let (me, other) = match to {
            Side::Client => (client, server),
            Side::Server => (server, client),
        };
        match msg.kind {
            MsgType::Ack if msg.seq_num != 0 => me.acked.ack(msg.seq_num),
            MsgType::CAck => me.acked.ack_through(msg.seq_num),
            MsgType::Data => {
                let sn = msg.seq_num;
                let first = other.sent.get(&sn).is_some_and(|tx| tx.times.len() == 1);
                if first {
                    other.rtt_pending.entry(sn).or_insert(at);
                }
            }
            _ => {}
        }
        let lo = isn.map_or(0, |isn| isn.saturating_add(1));
        me.forget_old(lo);
    }
}
