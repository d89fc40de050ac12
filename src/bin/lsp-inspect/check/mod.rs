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

mod age;
mod connect;
mod data;
mod rules;
mod side;
#[cfg(test)]
mod tests;
mod timers;

use std::time::Duration;

use liveseq::proto::{DecodeError, Message, MsgType};

use connect::{check_owner, Flow};
use data::{check_ack, check_data, intact};
use rules::Origin;
use timers::{check_lost, check_silent};

pub use age::AgeMap;
#[allow(unused_imports)] // for tests/inspect.rs
pub use connect::{MAX_ANSWERS, MAX_CONNS_PER_FLOW, MAX_ISNS};
pub use data::RttSamples;
pub use rules::{Rule, Seen, Violation};
pub use side::Side;
#[allow(unused_imports)] // for tests/inspect.rs
pub use side::MAX_SENT_HARD;

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

/// Client addresses (flows) tracked; the least recently active is
/// forgotten to make room. The proxy serves at most as many
/// ([`crate::proxy`]), and tells the checker when it drops one.
pub const MAX_FLOWS: usize = 4096;

/// Connections tracked, all addresses together (at most
/// [`MAX_CONNS_PER_FLOW`] per address); the least recently active is
/// forgotten to make room.
pub const MAX_CONNS: usize = 16_384;

/// ConnIDs whose owner (the address the server first gave it to) is kept,
/// and reuses remembered as reported.
const MAX_OWNERS: usize = 65_536;
const MAX_REUSED: usize = 4096;

/// What the checker may keep, by its own accounting (about what each
/// connection, message, transmission and table entry costs in memory):
/// beyond this, the least recently active connections are forgotten.
pub const MAX_BYTES: usize = 128 << 20;

/// The sizes of the checker's tables (see [`Checker::sizes`]).
#[allow(dead_code)] // for tests
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Client addresses tracked.
    pub flows: usize,
    /// Connections tracked.
    pub conns: usize,
    /// ISNs kept, all addresses together.
    pub isns: usize,
    /// Connect answers kept, all addresses together.
    pub answers: usize,
    /// Data messages kept, all sides together.
    pub sent: usize,
    /// ConnID owners kept.
    pub owners: usize,
    /// Reuses kept as reported.
    pub reused: usize,
    /// Stall stretches kept.
    pub stalls: usize,
    /// What the accounting charges for everything kept.
    pub bytes: usize,
    /// Connections forgotten to make room (addresses dropped included).
    pub conns_forgotten: u64,
}

/// The checker. See the module documentation. Every table is bounded:
/// [`MAX_FLOWS`], [`MAX_CONNS`], [`MAX_CONNS_PER_FLOW`], the per-address
/// bounds in [`connect`], the per-side ones in [`side`], and [`MAX_BYTES`]
/// over them all.
#[derive(Debug)]
pub struct Checker {
    params: CheckParams,
    flows: AgeMap<usize, Flow>,
    /// Every tracked connection (flow, ConnID), by activity.
    conn_ages: AgeMap<(usize, u32), ()>,
    /// Which client address (flow) the server first gave each ConnID to.
    owners: AgeMap<u32, usize>,
    /// (ConnID, flow) pairs reported as reused.
    reused: AgeMap<(u32, usize), ()>,
    rtt: RttSamples,
    /// Stretches in which the proxy itself was held up, oldest first.
    stalls: Vec<(Duration, Duration)>,
    stall_count: u64,
    stall_max: Duration,
    /// What the accounting charges for every flow kept.
    bytes: usize,
    /// A flow was forgotten for room: one heard again starts lenient.
    flows_evicted: bool,
    conns_forgotten: u64,
}

impl Checker {
    /// A checker for endpoints running with `params`.
    pub fn new(params: CheckParams) -> Checker {
        Checker::with_caps(params, MAX_FLOWS, MAX_CONNS)
    }

    /// The same with other bounds on addresses and connections.
    pub fn with_caps(params: CheckParams, flows: usize, conns: usize) -> Checker {
        Checker {
            params,
            flows: AgeMap::new(flows),
            conn_ages: AgeMap::new(conns),
            owners: AgeMap::new(MAX_OWNERS),
            reused: AgeMap::new(MAX_REUSED),
            rtt: RttSamples::default(),
            stalls: Vec::new(),
            stall_count: 0,
            stall_max: Duration::ZERO,
            bytes: 0,
            flows_evicted: false,
            conns_forgotten: 0,
        }
    }

    /// The sizes of its tables, to check that they stay bounded. O(flows).
    #[allow(dead_code)] // for tests
    pub fn sizes(&self) -> Sizes {
        let fl = self.flows.values();
        let (mut isns, mut answers, mut sent) = (0, 0, 0);
        for f in fl {
            isns += f.isns.len();
            answers += f.answers.len();
            sent += f
                .conns
                .values()
                .map(|c| c.sides[0].sent.len() + c.sides[1].sent.len())
                .sum::<usize>();
        }
        Sizes {
            flows: self.flows.len(),
            conns: self.conn_ages.len(),
            isns,
            answers,
            sent,
            owners: self.owners.len(),
            reused: self.reused.len(),
            stalls: self.stalls.len(),
            bytes: self.bytes,
            conns_forgotten: self.conns_forgotten,
        }
    }

    /// Forgets client address `flow` (the proxy dropped it: its number is
    /// never used again).
    pub fn forget(&mut self, flow: usize) {
        if let Some(fl) = self.flows.remove(&flow) {
            self.dropped_flow(flow, fl);
        }
    }

    fn dropped_flow(&mut self, flow: usize, fl: Flow) {
        self.bytes = self.bytes.saturating_sub(fl.cost);
        for &id in fl.conns.keys() {
            self.conn_ages.remove(&(flow, id));
            self.conns_forgotten += 1;
            if self.owners.get(&id) == Some(&flow) {
                self.owners.remove(&id);
            }
        }
    }

    /// Forgets connection `id` of `flow` (for room).
    fn forget_conn(&mut self, flow: usize, id: u32) {
        self.conn_ages.remove(&(flow, id));
        if let Some(fl) = self.flows.get_mut(&flow) {
            if fl.conns.remove(&id).is_some() {
                self.conns_forgotten += 1;
            }
            fl.forgot = true;
            reweigh(&mut self.bytes, fl);
        }
    }

    /// Forgets the least recently active connections (then addresses)
    /// until the accounting is under [`MAX_BYTES`]; never `flow`'s newest.
    fn make_room(&mut self, flow: usize) {
        while self.bytes > MAX_BYTES {
            match self.conn_ages.oldest().copied() {
                Some((f, id)) if self.conn_ages.len() > 1 => self.forget_conn(f, id),
                _ => match self.flows.oldest().copied() {
                    Some(f) if f != flow => {
                        self.flows_evicted = true;
                        self.forget(f);
                    }
                    _ => break,
                },
            }
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
        // Taken out while judged (so that the rest of the checker can be
        // changed meanwhile), and put back as the most recently active.
        let mut fl = self
            .flows
            .remove(&flow)
            .unwrap_or_else(|| Flow::new(self.flows_evicted));
        self.judge(&mut fl, &o, msg, &mut seen);
        reweigh(&mut self.bytes, &mut fl);
        let tracked = msg.kind != MsgType::Connect && fl.conns.contains_key(&msg.conn_id);
        if let Some((f, old)) = self.flows.insert(flow, fl) {
            self.flows_evicted = true;
            self.dropped_flow(f, old);
        }
        let key = (flow, msg.conn_id);
        if tracked && self.conn_ages.touch(&key).is_none() {
            if let Some(((f, id), ())) = self.conn_ages.insert(key, ()) {
                self.forget_conn(f, id);
            }
        }
        self.make_room(flow);
        seen
    }

    /// [`Checker::sent`] on the datagram's flow, taken out of the table.
    fn judge(&mut self, fl: &mut Flow, o: &Origin, msg: &Message<'_>, seen: &mut Seen) {
        let (at, flow, from, p) = (o.at, o.flow, o.from, self.params);
        let stalls = &self.stalls[..];
        if msg.kind == MsgType::Connect {
            if from == Side::Client {
                fl.client_connect(at, msg.seq_num);
            }
            // Connect resends follow no schedule the checker holds them to.
            return;
        }
        let id = msg.conn_id;
        seen.conn = Some(id);
        let o = &Origin {
            conn: Some(id),
            ..*o
        };
        let connect_isn = fl.isns.contains_key(&msg.seq_num).then_some(msg.seq_num);
        let is_connect_ack =
            from == Side::Server && msg.kind == MsgType::Ack && connect_isn.is_some();

        if from == Side::Server {
            check_owner(&mut self.owners, &mut self.reused, o, id, seen);
        }
        if !fl.conns.contains_key(&id) && fl.conns.len() >= MAX_CONNS_PER_FLOW {
            // Room for the new one: the address's least recently active.
            let ages = &self.conn_ages;
            let oldest = fl
                .conns
                .keys()
                .copied()
                .min_by_key(|&c| ages.age_of(&(flow, c)).unwrap_or(0));
            if let Some(old) = oldest {
                fl.conns.remove(&old);
                self.conn_ages.remove(&(flow, old));
                self.conns_forgotten += 1;
                fl.forgot = true;
            }
        }
        fl.track(id, is_connect_ack, connect_isn);
        if from == Side::Server {
            fl.check_answer(o, id, is_connect_ack, connect_isn, seen);
        }

        let Some(conn) = fl.conns.get_mut(&id) else {
            return;
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

        check_lost(o, &p, stalls, me, msg, seen);
        if applies_silent {
            check_silent(o, &p, stalls, me, fl.last_client_sent, seen);
        }
        me.last_sent = Some(at);
        if from == Side::Client {
            fl.last_client_sent = Some(at);
        }

        match msg.kind {
            MsgType::Connect => {}
            MsgType::Data => {
                check_data(o, &p, stalls, isn, me, msg, seen);
                me.forget_old(isn.map_or(0, |isn| isn.saturating_add(1)));
            }
            MsgType::Ack if msg.seq_num == 0 => {} // a heartbeat
            MsgType::Ack if is_connect_ack => {}
            MsgType::Ack | MsgType::CAck => check_ack(o, msg, other, &mut self.rtt, seen),
        }
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
        delivered_to(fl, at, to, msg);
        reweigh(&mut self.bytes, fl);
    }
}

/// Charges `fl` anew in the running total `bytes`.
fn reweigh(bytes: &mut usize, fl: &mut Flow) {
    let now = fl.cost_now();
    *bytes = bytes.saturating_sub(fl.cost).saturating_add(now);
    fl.cost = now;
}

/// [`Checker::delivered`] on the datagram's flow.
fn delivered_to(fl: &mut Flow, at: Duration, to: Side, msg: &Message<'_>) {
    {
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
            MsgType::Ack if msg.seq_num != 0 => me.acked_one(msg.seq_num),
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
