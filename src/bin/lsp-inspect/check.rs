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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use liveseq::proto::{checksum, DecodeError, Message, MsgType};

/// Which end of a connection sent a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The LSP client (its datagrams go to the server).
    Client,
    /// The LSP server (its datagrams go to a client).
    Server,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// Lower-case name, as written in logs and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A SPEC rule the checker enforces. [`Rule::name`] is what reports print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A datagram that is not an LSP message (bad JSON, unknown type, bad base64).
    Malformed,
    /// Data whose payload length differs from its `Size`.
    BadSize,
    /// Data whose checksum does not match its header and payload.
    BadChecksum,
    /// Data numbered at or beyond oldest unacknowledged + `WindowSize`.
    BeyondWindow,
    /// New Data sent while `MaxUnackedMessages` were already unacknowledged.
    MaxUnacked,
    /// An Ack or CAck of a sequence number the other side never sent.
    AckUnsent,
    /// Data retransmitted sooner than the back-off schedule allows.
    EarlyRetransmit,
    /// More than two epochs without sending anything while hearing nothing.
    Silent,
    /// A message on a connection the sender must already have declared lost.
    AfterLost,
    /// A repeated Connect answered with a new ConnID while the old one lived.
    ConnectReanswered,
    /// A ConnID the server had given to another client address.
    ConnIdReused,
}

impl Rule {
    /// The rule's short name, as printed in reports and logs.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Malformed => "malformed",
            Rule::BadSize => "bad-size",
            Rule::BadChecksum => "bad-checksum",
            Rule::BeyondWindow => "beyond-window",
            Rule::MaxUnacked => "max-unacked",
            Rule::AckUnsent => "ack-unsent",
            Rule::EarlyRetransmit => "early-retransmit",
            Rule::Silent => "silent",
            Rule::AfterLost => "after-lost",
            Rule::ConnectReanswered => "connect-reanswered",
            Rule::ConnIdReused => "conn-id-reused",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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

/// One breach of a rule, by one side, proven by one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// The side that broke it.
    pub side: Side,
    /// The client address (flow number) it happened on.
    pub flow: usize,
    /// The connection, when the datagram named one.
    pub conn: Option<u32>,
    /// Index of the datagram that proves it (the proxy numbers every datagram).
    pub datagram: usize,
    /// When the proxy received that datagram.
    pub at: Duration,
    /// What happened, in words.
    pub detail: String,
}

/// What the checker made of one datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The connection it belongs to, if it names one.
    pub conn: Option<u32>,
    /// For Data: how many times the proxy had seen it before (0: first transmission).
    pub retransmission: u32,
    /// A server's `(Ack, id, isn)` answering a Connect of this address
    /// (with ISN 0 it looks like a heartbeat).
    pub connect_ack: bool,
    /// Rules it broke.
    pub violations: Vec<Violation>,
}

/// Sequence numbers acknowledged to a sender by what the proxy delivered.
#[derive(Debug, Default)]
struct AckSet {
    /// Everything at or below this was covered by a CAck.
    through: u64,
    /// Plain Acks above `through`.
    single: BTreeSet<u64>,
}

impl AckSet {
    fn ack(&mut self, sn: u64) {
        if sn > self.through {
            self.single.insert(sn);
        }
    }

    fn ack_through(&mut self, sn: u64) {
        if sn > self.through {
            self.through = sn;
            self.single = self.single.split_off(&sn.saturating_add(1));
        }
    }

    fn contains(&self, sn: u64) -> bool {
        sn <= self.through || self.single.contains(&sn)
    }

    /// The smallest sequence number at or above `lo` not acknowledged.
    fn first_unacked(&self, lo: u64) -> u64 {
        let mut n = lo.max(self.through.saturating_add(1));
        // Bounded by the set's size, and by the last number (an Ack of
        // u64::MAX must not keep a saturating count going forever).
        while self.single.contains(&n) && n < u64::MAX {
            n += 1;
        }
        n
    }
}

/// Transmissions kept per Data message for the back-off check; beyond
/// this many resends of one message its schedule is no longer checked.
const MAX_TIMES: usize = 64;

/// Data messages remembered per side before the oldest acknowledged are forgotten.
const MAX_SENT: usize = 4096;

/// One Data message a side sent.
#[derive(Debug, Default)]
struct Tx {
    /// When the proxy saw each transmission (the first one first).
    times: Vec<Duration>,
    early_reported: bool,
    reported: bool,
}

/// What the checker knows about one side of one connection.
#[derive(Debug, Default)]
struct SideState {
    /// Data this side sent, by sequence number.
    sent: BTreeMap<u64, Tx>,
    /// Everything below this was sent and forgotten (see [`MAX_SENT`]).
    forgotten_below: u64,
    /// Acknowledgements of this side's Data that the proxy delivered to it.
    acked: AckSet,
    last_sent: Option<Duration>,
    /// Last time the proxy delivered anything of this connection to this side.
    last_heard: Option<Duration>,
    lost_reported: bool,
    /// This side's Data delivered once and not yet acknowledged: when.
    rtt_pending: HashMap<u64, Duration>,
    reported_acks: BTreeSet<u64>,
}

impl SideState {
    fn was_sent(&self, sn: u64) -> bool {
        sn < self.forgotten_below || self.sent.contains_key(&sn)
    }

    fn forget_old(&mut self, lo: u64) {
        let n = self.acked.first_unacked(lo);
        while self.sent.len() > MAX_SENT {
            match self.sent.first_key_value() {
                Some((&sn, _)) if sn < n => {
                    self.sent.remove(&sn);
                    self.forgotten_below = self.forgotten_below.max(sn.saturating_add(1));
                    self.rtt_pending.remove(&sn);
                }
                _ => break,
            }
        }
        if self.rtt_pending.len() > MAX_SENT {
            self.rtt_pending.clear();
        }
    }
}

/// One connection (one ConnID on one client address).
#[derive(Debug)]
struct TrackedConn {
    /// The client's ISN, when it is known for sure.
    isn: Option<u64>,
    sides: [SideState; 2],
    /// Something of this connection reached the client (it knows its id).
    client_connected: bool,
    /// Something other than a Connect reached the server from the client.
    server_validated: bool,
}

/// A ConnID the server gave in answer to a Connect.
#[derive(Debug)]
struct Answer {
    isn: u64,
    id: u32,
}

/// A repeated Connect answered with `newer` although `older` answered the same ISN before.
#[derive(Debug)]
struct Contested {
    older: u32,
    newer: u32,
    isn: u64,
    at: Duration,
    datagram: usize,
    reported: bool,
}

/// Everything known about one client address.
#[derive(Debug, Default)]
struct Flow {
    /// Distinct ISNs of the client's Connects, in order.
    isns: Vec<u64>,
    last_client_sent: Option<Duration>,
    last_connect_delivered: Option<Duration>,
    conns: HashMap<u32, TrackedConn>,
    answers: Vec<Answer>,
    contested: Vec<Contested>,
}

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

/// Connect answers (and contested ones) remembered per client address.
const MAX_ANSWERS: usize = 256;

/// Stall stretches remembered (older ones are forgotten: the timer rules
/// look back a few epochs at most).
const MAX_STALLS: usize = 4096;

/// Stall time within `from..to`.
fn stall_within(stalls: &[(Duration, Duration)], from: Duration, to: Duration) -> Duration {
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

/// Samples kept per side for the RTT estimate.
const MAX_RTT_SAMPLES: usize = 100_000;

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

fn later(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Epochs that must separate resend `i` from resend `j` (`1 <= i < j`,
/// transmission 0 being the first) under the back-off rule of SPEC: after
/// each resend the message waits `backoff + 1` epochs, `backoff` going
/// 0, 1, 2, 4, ... capped at `max_backoff`.
fn required_epochs(max_backoff: u32, i: usize, j: usize) -> u64 {
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

/// Whether a receiver would take `msg`: anything but Data that fails the
/// integrity rules.
fn intact(msg: &Message<'_>) -> bool {
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

fn kind_name(msg: &Message<'_>) -> String {
    match msg.kind {
        MsgType::Ack if msg.seq_num == 0 => "a heartbeat".to_string(),
        MsgType::Connect => "Connect".to_string(),
        MsgType::Data => format!("Data {}", msg.seq_num),
        MsgType::Ack => "Ack".to_string(),
        MsgType::CAck => "CAck".to_string(),
    }
}

/// The Data rules: integrity, window, unacknowledged limit, back-off.
#[allow(clippy::too_many_arguments)]
fn check_data(
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

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Duration = Duration::from_millis(100);
    const J: Duration = Duration::from_millis(30);

    fn params(max_backoff: u32) -> CheckParams {
        CheckParams {
            epoch: E,
            epoch_limit: 5,
            window: 4,
            max_unacked: 4,
            max_backoff,
            jitter: J,
        }
    }

    /// A checker with one connection (id 7, ISN 100) set up and validated
    /// at time zero, and a counter for datagram numbers.
    struct Script {
        c: Checker,
        n: usize,
    }

    impl Script {
        fn new(max_backoff: u32) -> Script {
            let mut s = Script {
                c: Checker::new(params(max_backoff)),
                n: 0,
            };
            let z = Duration::ZERO;
            s.both(z, Side::Client, &Message::connect(100));
            s.both(z, Side::Server, &Message::ack(7, 100));
            s.both(z, Side::Client, &Message::ack(7, 0));
            s
        }

        /// Sent and delivered at once; returns the rules broken.
        fn both(&mut self, at: Duration, from: Side, msg: &Message<'_>) -> Vec<Rule> {
            let seen = self.c.sent(at, 0, from, self.n, Ok(msg));
            self.n += 1;
            self.c.delivered(at, 0, from.other(), Ok(msg));
            seen.violations.iter().map(|v| v.rule).collect()
        }

        /// Sent, and dropped by the proxy.
        fn lost(&mut self, at: Duration, from: Side, msg: &Message<'_>) -> Vec<Rule> {
            let seen = self.c.sent(at, 0, from, self.n, Ok(msg));
            self.n += 1;
            seen.violations.iter().map(|v| v.rule).collect()
        }
    }

    #[test]
    fn a_connect_ack_is_told_from_a_heartbeat() {
        let z = Duration::ZERO;
        let mut c = Checker::new(params(0));
        let connect = Message::connect(0);
        assert!(!c.sent(z, 0, Side::Client, 0, Ok(&connect)).connect_ack);
        c.delivered(z, 0, Side::Server, Ok(&connect));
        // With ISN 0 the answer is (Ack, id, 0), like a heartbeat.
        assert!(
            c.sent(z, 0, Side::Server, 1, Ok(&Message::ack(3, 0)))
                .connect_ack
        );
        // The client's heartbeat is not one.
        assert!(
            !c.sent(z, 0, Side::Client, 2, Ok(&Message::ack(3, 0)))
                .connect_ack
        );
    }

    #[test]
    fn back_off_schedule_matches_spec() {
        // A message first sent in epoch 0 and never acknowledged is resent
        // in epochs 1, 3, 6, 11, 20 (cap large): 2, 3, 5, 9 epochs apart.
        let gaps: Vec<u64> = (2..6).map(|j| required_epochs(64, j - 1, j)).collect();
        assert_eq!(gaps, [2, 3, 5, 9]);
        assert_eq!(required_epochs(64, 1, 5), 19);
        assert_eq!(required_epochs(0, 1, 5), 4); // cap 0: every epoch
        assert_eq!(required_epochs(2, 1, 5), 2 + 3 + 3 + 3);
    }

    #[test]
    fn retransmissions_are_judged_against_the_schedule_less_jitter() {
        let ms = Duration::from_millis;
        let data = Message::data(7, 101, b"x");
        // On schedule with max back-off 4, each resend as late as the jitter allows.
        let mut s = Script::new(4);
        let mut t = ms(10);
        assert_eq!(s.lost(t, Side::Client, &data), []);
        t += ms(1); // the first resend may follow at once (the next tick)
        assert_eq!(s.lost(t, Side::Client, &data), []);
        for gap in [2u32, 3, 5, 5] {
            // The server heartbeats every epoch meanwhile, so the client
            // owes none.
            for k in 1..gap {
                s.both(t + E * k, Side::Server, &Message::ack(7, 0));
            }
            t += E * gap - J;
            assert_eq!(s.lost(t, Side::Client, &data), [], "gap {gap}");
            t += J; // back on the grid for the next one
        }
        // One millisecond sooner than that is caught.
        let mut s = Script::new(4);
        s.lost(ms(10), Side::Client, &data);
        s.lost(ms(11), Side::Client, &data);
        let early = ms(11) + E * 2 - J - ms(1);
        assert_eq!(s.lost(early, Side::Client, &data), [Rule::EarlyRetransmit]);
    }

    #[test]
    fn silence_and_loss_boundaries() {
        let ms = Duration::from_millis;
        // Silent both ways for exactly 2 epochs + jitter: allowed; 1 ms more: not.
        let mut s = Script::new(0);
        assert_eq!(s.both(E * 2 + J, Side::Client, &Message::ack(7, 0)), []);
        let mut s = Script::new(0);
        assert_eq!(
            s.both(E * 2 + J + ms(1), Side::Client, &Message::ack(7, 0)),
            [Rule::Silent]
        );
        // Hearing something resets the silence.
        let mut s = Script::new(0);
        s.both(E * 2, Side::Server, &Message::ack(7, 0));
        assert_eq!(s.both(E * 4, Side::Client, &Message::ack(7, 0)), []);

        // The client keeps talking but hears nothing (everything the server
        // sends is dropped): epoch_limit epochs + jitter after it last heard
        // it must be gone.
        let mut s = Script::new(0);
        let mut t = Duration::ZERO;
        while t < E * 5 + J {
            assert_eq!(s.lost(t, Side::Server, &Message::ack(7, 0)), []);
            assert_eq!(s.both(t, Side::Client, &Message::ack(7, 0)), []);
            t += E;
        }
        assert_eq!(s.both(E * 5 + J, Side::Client, &Message::ack(7, 0)), []);
        assert_eq!(
            s.both(E * 5 + J + ms(1), Side::Client, &Message::ack(7, 0)),
            [Rule::AfterLost]
        );
        // Reported once per connection and side.
        assert_eq!(s.both(E * 6, Side::Client, &Message::ack(7, 0)), []);
    }

    #[test]
    fn the_proxy_held_up_excuses_that_long() {
        let ms = Duration::from_millis;
        let late = E * 2 + J + ms(50);
        let mut s = Script::new(0);
        assert_eq!(
            s.both(late, Side::Client, &Message::ack(7, 0)),
            [Rule::Silent]
        );
        let mut s = Script::new(0);
        s.c.stalled(ms(100), ms(160));
        assert_eq!(s.both(late, Side::Client, &Message::ack(7, 0)), []);
        assert_eq!(s.c.stalls(), (1, ms(60)));
        // A stall outside the stretch judged excuses nothing.
        let mut s = Script::new(0);
        s.c.stalled(late + ms(1), late + ms(100));
        assert_eq!(
            s.both(late, Side::Client, &Message::ack(7, 0)),
            [Rule::Silent]
        );
        assert_eq!(
            stall_within(&[(ms(0), ms(10)), (ms(20), ms(40))], ms(5), ms(30)),
            ms(15)
        );
    }

    #[test]
    fn window_is_anchored_at_the_oldest_ack_the_sender_can_have_seen() {
        let z = Duration::ZERO;
        let mut s = Script::new(0);
        for sn in 101..=104 {
            assert_eq!(s.both(z, Side::Client, &Message::data(7, sn, b"x")), []);
        }
        // 102-104 acknowledged, but the Ack of 102 was dropped by the proxy:
        // the client may still count 102 as in flight, and 101 anchors the window.
        s.lost(z, Side::Server, &Message::ack(7, 102));
        s.both(z, Side::Server, &Message::ack(7, 103));
        s.both(z, Side::Server, &Message::ack(7, 104));
        assert_eq!(
            s.both(z, Side::Client, &Message::data(7, 105, b"x")),
            [Rule::BeyondWindow]
        );
        // A CAck of 102 delivered moves it to 105: up to 108, two in flight.
        s.both(z, Side::Server, &Message::cack(7, 102));
        assert_eq!(s.both(z, Side::Client, &Message::data(7, 108, b"x")), []);
    }

    /// Random traffic with extreme values in every field, in any order, from
    /// any side, delivered or not, at any time: the checker never panics
    /// (debug builds check every addition), whatever it reports.
    #[test]
    fn hostile_traffic_never_panics() {
        let mut rng = crate::faults::Rng(0x1234_5678);
        let mut next = move || rng.next();
        let extremes = [
            0,
            1,
            2,
            99,
            100,
            101,
            102,
            u64::from(u32::MAX),
            i64::MAX as u64 - 1,
            i64::MAX as u64,
            u64::MAX,
        ];
        for (epoch_limit, max_backoff, window) in
            [(1, 0, 1), (5, 8, 4), (u32::MAX, u32::MAX, u64::MAX)]
        {
            let mut c = Checker::new(CheckParams {
                epoch: E,
                epoch_limit,
                window,
                max_unacked: window,
                max_backoff,
                jitter: J,
            });
            let mut at = Duration::ZERO;
            for i in 0..20_000 {
                let pick = |r: u64| extremes[(r % extremes.len() as u64) as usize];
                let seq = if next() % 2 == 0 {
                    pick(next())
                } else {
                    100 + next() % 20
                };
                let id = [0, 1, 7, u32::MAX][(next() % 4) as usize];
                let payload = vec![0xA5; (next() % 4) as usize];
                let mut msg = match next() % 5 {
                    0 => Message::connect(seq),
                    1 => Message::ack(id, seq),
                    2 => Message::cack(id, seq),
                    _ => Message::data(id, seq, &payload),
                };
                if next() % 8 == 0 {
                    msg.size = pick(next());
                }
                if next() % 8 == 0 {
                    msg.checksum ^= 1;
                }
                let from = if next() % 2 == 0 {
                    Side::Client
                } else {
                    Side::Server
                };
                let flow = (next() % 3) as usize;
                at += Duration::from_millis(next() % 80);
                if next() % 50 == 0 {
                    c.stalled(at.saturating_sub(E), at);
                }
                c.sent(at, flow, from, i, Ok(&msg));
                if next() % 3 != 0 {
                    c.delivered(at, flow, from.other(), Ok(&msg));
                }
            }
        }
    }
}
