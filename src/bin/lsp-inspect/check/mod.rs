//! The protocol checker (the rules of docs/PROTOCOL.md): an I/O-free judge of what each side of each connection
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
//!
//! The parts: [`Checker`] holds the state and walks each datagram through
//! the checks in order; [`connect`] keeps each client address and its
//! connections and checks ConnIDs and repeated Connects; [`timers`] holds
//! the rules with a deadline (lost, silent, back-off); [`data`] the rules
//! on Data and acknowledgements; [`side`] what is known of each end of a
//! connection; [`rules`] the rules and the findings that report them.

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

use connect::{check_owner, Flow};
use data::{check_ack, check_data, intact};
use rules::Origin;
use timers::{check_lost, check_silent};

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
        let o = Origin {
            at,
            flow,
            from,
            datagram,
            conn: None,
        };
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                o.report(
                    &mut seen,
                    Rule::Malformed,
                    format!("not an LSP message: {e}"),
                );
                return seen;
            }
        };
        let stalls = &self.stalls[..];
        let fl = self.flows.entry(flow).or_default();
        if msg.kind == MsgType::Connect {
            if from == Side::Client {
                fl.client_connect(at, msg.seq_num);
            }
            // Connect resends follow no schedule the checker holds them to.
            return seen;
        }
        let id = msg.conn_id;
        seen.conn = Some(id);
        let o = Origin {
            conn: Some(id),
            ..o
        };
        let connect_isn = fl.isns.contains(&msg.seq_num).then_some(msg.seq_num);
        let is_connect_ack =
            from == Side::Server && msg.kind == MsgType::Ack && connect_isn.is_some();

        if from == Side::Server {
            check_owner(&mut self.owners, &mut self.reused, &o, id, &mut seen);
        }
        fl.track(id, is_connect_ack, connect_isn);
        if from == Side::Server {
            fl.check_answer(&o, id, is_connect_ack, connect_isn, &mut seen);
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

        check_lost(&o, &p, stalls, me, msg, &mut seen);
        if applies_silent {
            check_silent(&o, &p, stalls, me, fl.last_client_sent, &mut seen);
        }
        me.last_sent = Some(at);
        if from == Side::Client {
            fl.last_client_sent = Some(at);
        }

        match msg.kind {
            MsgType::Connect => {}
            MsgType::Data => check_data(&o, &p, stalls, isn, me, msg, &mut seen),
            MsgType::Ack if msg.seq_num == 0 => {} // a heartbeat
            MsgType::Ack if is_connect_ack => {}
            MsgType::Ack | MsgType::CAck => check_ack(&o, msg, other, &mut self.rtt, &mut seen),
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
