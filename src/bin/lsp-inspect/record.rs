//! The record of a run: a JSON line per datagram (and per violation) for
//! `--log`, the rows the timeline draws, counts, and the closing summary.
//! It writes to any `io::Write` and reads no clock: the proxy hands it
//! times.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use liveseq::proto::{DecodeError, Message, MsgType};
use serde_json::{json, Value};

use crate::check::{AgeMap, RttSamples, Rule, Seen, Side, Violation, MAX_FLOWS};
use crate::faults::Decision;

/// Payload bytes shown in logs and on the timeline.
pub const PAYLOAD_SHOWN: usize = 32;

/// Datagrams drawn per client address on the timeline; the rest are counted.
pub const ROWS_PER_FLOW: usize = 300;

/// Datagrams drawn on the timeline, all addresses together; the rest are
/// counted (about 200 bytes each: some 10 MB at most).
pub const ROWS_TOTAL: usize = 50_000;

/// Client addresses recorded (the least recently active is forgotten,
/// its datagrams staying in the counts).
pub const FLOWS_KEPT: usize = MAX_FLOWS;

/// ConnIDs listed per client address (the rest are counted).
pub const CONNS_KEPT: usize = 32;

/// Violations kept with their details (all are counted).
const VIOLATIONS_KEPT: usize = 1000;

/// What kind of datagram a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Connect.
    Connect,
    /// A Data message.
    Data,
    /// An Ack of Data (or of a Connect).
    Ack,
    /// A cumulative Ack.
    CAck,
    /// `(Ack, id, 0)`.
    Heartbeat,
    /// Not an LSP message.
    Malformed,
}

impl Kind {
    fn of(msg: Result<&Message<'_>, DecodeError>, seen: &Seen) -> Kind {
        match msg {
            Err(_) => Kind::Malformed,
            Ok(m) => match m.kind {
                MsgType::Connect => Kind::Connect,
                MsgType::Data => Kind::Data,
                MsgType::Ack if m.seq_num == 0 && !seen.connect_ack => Kind::Heartbeat,
                MsgType::Ack => Kind::Ack,
                MsgType::CAck => Kind::CAck,
            },
        }
    }
}

/// One datagram as the timeline shows it.
#[derive(Clone, Debug)]
pub struct Row {
    /// The proxy's number for it.
    pub index: usize,
    /// When the proxy received it.
    pub at: Duration,
    /// Who sent it.
    pub from: Side,
    /// Its kind.
    pub kind: Kind,
    /// A short description (`Data 43 "hello"`).
    pub label: String,
    /// The faults applied (empty: forwarded as is).
    pub fate: String,
    /// Whether no copy was forwarded.
    pub dropped: bool,
    /// Data seen before.
    pub retransmission: bool,
    /// Rules it broke, with details.
    pub violations: Vec<(Rule, String)>,
}

/// Datagram counts of one direction (or of the rows left off a timeline).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// All datagrams.
    pub datagrams: u64,
    /// Connects.
    pub connects: u64,
    /// Data messages, retransmissions included.
    pub data: u64,
    /// Data messages seen before.
    pub retransmissions: u64,
    /// Acks (heartbeats excluded).
    pub acks: u64,
    /// CAcks.
    pub cacks: u64,
    /// Heartbeats.
    pub heartbeats: u64,
    /// Undecodable datagrams.
    pub malformed: u64,
    /// Dropped by the proxy (faults or blackout).
    pub dropped: u64,
    /// Sent twice by the proxy.
    pub duplicated: u64,
    /// Held back by the proxy (delay or reorder).
    pub delayed: u64,
    /// Corrupted by the proxy.
    pub corrupted: u64,
    /// Violations.
    pub violations: u64,
}

impl Counts {
    /// What they count (all but `datagrams`): the kinds of datagram, then
    /// `sep`, then the proxy's faults and the violations.
    pub fn describe(&self, sep: &str) -> String {
        format!(
            "{} Data ({} retransmissions), {} Acks, {} CAcks, {} heartbeats, {} Connects, {} undecodable{sep}\
             proxy faults: {} dropped, {} duplicated, {} delayed, {} corrupted; {} violations",
            self.data,
            self.retransmissions,
            self.acks,
            self.cacks,
            self.heartbeats,
            self.connects,
            self.malformed,
            self.dropped,
            self.duplicated,
            self.delayed,
            self.corrupted,
            self.violations
        )
    }

    fn add(&mut self, row: &Row, decision: &Decision, violations: usize) {
        self.datagrams += 1;
        match row.kind {
            Kind::Connect => self.connects += 1,
            Kind::Data => self.data += 1,
            Kind::Ack => self.acks += 1,
            Kind::CAck => self.cacks += 1,
            Kind::Heartbeat => self.heartbeats += 1,
            Kind::Malformed => self.malformed += 1,
        }
        self.retransmissions += u64::from(row.retransmission);
        self.dropped += u64::from(decision.dropped.is_some());
        self.duplicated += u64::from(decision.copies.len() > 1);
        self.delayed += u64::from(decision.copies.iter().any(|d| !d.is_zero()));
        self.corrupted += u64::from(decision.replacement.is_some());
        self.violations += violations as u64;
    }
}

/// Everything recorded about one client address.
#[derive(Clone, Debug)]
pub struct FlowRecord {
    /// The client's address.
    pub client: SocketAddr,
    /// ConnIDs seen on it (the first [`CONNS_KEPT`]).
    pub conns: BTreeSet<u32>,
    /// Datagrams naming a ConnID beyond those.
    pub conns_more: u64,
    /// The first [`ROWS_PER_FLOW`] datagrams.
    pub rows: Vec<Row>,
    /// Counts of the datagrams beyond them.
    pub omitted: Counts,
    /// When its last datagram came.
    pub last_at: Duration,
}

/// One datagram as the proxy hands it to the record: number `index`,
/// received at `at` from a side of client `client` (flow number `flow`),
/// with the checker's view and the fault decision.
#[derive(Clone, Copy)]
pub struct Datagram<'a> {
    /// The proxy's number for it.
    pub index: usize,
    /// When the proxy received it.
    pub at: Duration,
    /// Its client address's flow number.
    pub flow: usize,
    /// Its client address.
    pub client: SocketAddr,
    /// Who sent it.
    pub from: Side,
    /// Its bytes.
    pub raw: &'a [u8],
    /// Its bytes decoded.
    pub msg: Result<&'a Message<'a>, DecodeError>,
    /// What the checker made of it.
    pub seen: &'a Seen,
    /// Its fate.
    pub decision: &'a Decision,
}

/// The record of a run. See the module documentation.
pub struct Recorder {
    log: Option<Box<dyn Write + Send>>,
    log_error: Option<String>,
    /// Per client address (flow number), the [`FLOWS_KEPT`] most
    /// recently active.
    pub flows: AgeMap<usize, FlowRecord>,
    /// Client addresses heard, forgotten ones included.
    pub flows_seen: u64,
    /// ConnIDs listed for addresses since forgotten.
    conns_forgotten: u64,
    /// Rows held, all addresses together (at most [`ROWS_TOTAL`]).
    rows: usize,
    /// Client addresses the proxy dropped to make room for new ones.
    pub clients_dropped: u64,
    /// Held-back copies the proxy dropped because its queue was full.
    pub held_dropped: u64,
    /// What clients sent, and what the server sent.
    pub counts: [Counts; 2],
    /// The first violations, with details.
    pub violations: Vec<Violation>,
    /// The client address of each of them.
    pub violation_clients: Vec<SocketAddr>,
    /// Violations by rule and side.
    pub by_rule: BTreeMap<(Rule, Side), u64>,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Up to [`PAYLOAD_SHOWN`] bytes as text, with anything unprintable escaped.
pub fn shown_payload(payload: &[u8]) -> String {
    let mut s: String = payload
        .iter()
        .take(PAYLOAD_SHOWN)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if payload.len() > PAYLOAD_SHOWN {
        s.push('…');
    }
    s
}

fn label(msg: Result<&Message<'_>, DecodeError>, raw: &[u8], seen: &Seen) -> String {
    match msg {
        Err(e) => format!("{e} ({} bytes)", raw.len()),
        Ok(m) => match m.kind {
            MsgType::Connect => format!("Connect isn {}", m.seq_num),
            MsgType::Data => format!("Data {} \"{}\"", m.seq_num, shown_payload(&m.payload)),
            MsgType::Ack if seen.connect_ack => format!("Ack {} (answers Connect)", m.seq_num),
            MsgType::Ack if m.seq_num == 0 => "heartbeat".to_string(),
            MsgType::Ack => format!("Ack {}", m.seq_num),
            MsgType::CAck => format!("CAck {}", m.seq_num),
        },
    }
}

impl Recorder {
    /// A recorder writing JSON lines to `log`, if given.
    pub fn new(log: Option<Box<dyn Write + Send>>) -> Recorder {
        Recorder {
            log,
            log_error: None,
            flows: AgeMap::new(FLOWS_KEPT),
            flows_seen: 0,
            conns_forgotten: 0,
            rows: 0,
            clients_dropped: 0,
            held_dropped: 0,
            counts: Default::default(),
            violations: Vec::new(),
            violation_clients: Vec::new(),
            by_rule: BTreeMap::new(),
        }
    }

    fn write_line(&mut self, value: &Value) {
        if let Some(log) = &mut self.log {
            if let Err(e) = writeln!(log, "{value}") {
                // Keep proxying; report the lost log once, at the end.
                self.log_error = Some(e.to_string());
                self.log = None;
            }
        }
    }

    /// Records a datagram.
    pub fn datagram(&mut self, d: &Datagram<'_>) {
        if self.log.is_some() {
            self.log_datagram(d);
        }
        let Datagram {
            index,
            at,
            flow,
            client,
            from,
            raw,
            msg,
            seen,
            decision,
        } = *d;
        for v in &seen.violations {
            *self.by_rule.entry((v.rule, v.side)).or_default() += 1;
            if self.violations.len() < VIOLATIONS_KEPT {
                self.violations.push(v.clone());
                self.violation_clients.push(client);
            }
        }
        let kind = Kind::of(msg, seen);
        let mut gone = None;
        let fresh = &mut false;
        let fl = self.flows.touch_or_insert_with(
            &flow,
            || {
                *fresh = true;
                FlowRecord {
                    client,
                    conns: BTreeSet::new(),
                    conns_more: 0,
                    rows: Vec::new(),
                    omitted: Counts::default(),
                    last_at: at,
                }
            },
            |_, old| gone = Some(old),
        );
        fl.client = client;
        fl.last_at = at;
        if let Some(id) = seen.conn {
            if fl.conns.len() < CONNS_KEPT {
                fl.conns.insert(id);
            } else if !fl.conns.contains(&id) {
                fl.conns_more += 1;
            }
        }
        let keep = fl.rows.len() < ROWS_PER_FLOW && self.rows < ROWS_TOTAL;
        // Only a row that is kept is described in words.
        let row = Row {
            index,
            at,
            from,
            kind,
            label: if keep {
                label(msg, raw, seen)
            } else {
                String::new()
            },
            fate: if keep {
                decision.label()
            } else {
                String::new()
            },
            dropped: decision.dropped.is_some(),
            retransmission: seen.retransmission > 0,
            violations: if keep {
                seen.violations
                    .iter()
                    .map(|v| (v.rule, v.detail.clone()))
                    .collect()
            } else {
                Vec::new()
            },
        };
        self.counts[from as usize].add(&row, decision, seen.violations.len());
        if keep {
            fl.rows.push(row);
            self.rows += 1;
        } else {
            fl.omitted.add(&row, decision, seen.violations.len());
        }
        if *fresh {
            self.flows_seen += 1;
        }
        if let Some(old) = gone {
            self.rows -= old.rows.len();
            self.conns_forgotten += old.conns.len() as u64;
        }
    }

    /// The JSON lines of one datagram and its violations.
    fn log_datagram(&mut self, d: &Datagram<'_>) {
        let (seen, raw, client) = (d.seen, d.raw, d.client);
        let mut line = json!({
            "i": d.index,
            "t_ms": millis(d.at),
            "from": d.from.name(),
            "client": client.to_string(),
            "bytes": raw.len(),
        });
        match d.msg {
            Ok(m) => {
                line["type"] = json!(format!("{:?}", m.kind));
                line["conn"] = json!(m.conn_id);
                line["seq"] = json!(m.seq_num);
                if m.kind == MsgType::Data {
                    line["size"] = json!(m.size);
                    line["checksum"] = json!(m.checksum);
                    let shown = &m.payload[..m.payload.len().min(PAYLOAD_SHOWN)];
                    line["payload"] = json!(BASE64.encode(shown));
                    line["payload_text"] = json!(shown_payload(&m.payload));
                    line["payload_len"] = json!(m.payload.len());
                    if seen.retransmission > 0 {
                        line["retransmission"] = json!(seen.retransmission);
                    }
                } else if seen.connect_ack {
                    line["connect_ack"] = json!(true);
                } else if m.kind == MsgType::Ack && m.seq_num == 0 {
                    line["heartbeat"] = json!(true);
                }
            }
            Err(e) => {
                line["error"] = json!(e.to_string());
                let shown = &raw[..raw.len().min(2 * PAYLOAD_SHOWN)];
                line["raw"] = json!(String::from_utf8_lossy(shown));
            }
        }
        let fate = d.decision.label();
        if !fate.is_empty() {
            line["fault"] = json!(fate);
        }
        if !seen.violations.is_empty() {
            line["violations"] = json!(seen
                .violations
                .iter()
                .map(|v| v.rule.name())
                .collect::<Vec<_>>());
        }
        self.write_line(&line);
        for v in &seen.violations {
            self.write_line(&json!({
                "violation": v.rule.name(),
                "i": v.datagram,
                "t_ms": millis(v.at),
                "side": v.side.name(),
                "client": client.to_string(),
                "conn": v.conn,
                "detail": v.detail,
            }));
        }
    }

    /// Records that a held-back copy of datagram `index` went out at `at`.
    pub fn released(&mut self, index: usize, at: Duration) {
        self.write_line(&json!({"released": index, "t_ms": millis(at)}));
    }

    /// Flushes the log; returns the first write error, if any.
    pub fn finish(&mut self) -> Result<(), String> {
        if let Some(log) = &mut self.log {
            if let Err(e) = log.flush() {
                self.log_error.get_or_insert(e.to_string());
            }
        }
        self.log = None;
        match self.log_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The recorded addresses in order of flow number (first heard first).
    pub fn flows_in_order(&self) -> Vec<(usize, &FlowRecord)> {
        let mut v: Vec<_> = self.flows.iter().map(|(&f, r)| (f, r)).collect();
        v.sort_by_key(|&(f, _)| f);
        v
    }

    /// Every client address it still knows by flow number: those recorded,
    /// and those of the violations kept.
    pub fn clients(&self) -> BTreeMap<usize, SocketAddr> {
        let mut m: BTreeMap<usize, SocketAddr> =
            self.flows.iter().map(|(&f, r)| (f, r.client)).collect();
        for (v, &c) in self.violations.iter().zip(&self.violation_clients) {
            m.entry(v.flow).or_insert(c);
        }
        m
    }

    /// Violations in all.
    pub fn violation_count(&self) -> u64 {
        self.by_rule.values().sum()
    }

    /// The text summary; its last line is `violations: N`.
    /// `stalls` is how many times the proxy was held up and the longest.
    pub fn summary(&self, elapsed: Duration, rtt: &RttSamples, stalls: (u64, Duration)) -> String {
        let mut s = String::new();
        let conns = self
            .flows
            .values()
            .map(|f| f.conns.len() as u64)
            .sum::<u64>()
            + self.conns_forgotten;
        let more = self.flows.values().any(|f| f.conns_more > 0);
        let _ = writeln!(
            s,
            "summary: {:.1} s, {} client address(es), {}{conns} connection(s)",
            elapsed.as_secs_f64(),
            self.flows_seen,
            if more { "at least " } else { "" },
        );
        if self.clients_dropped > 0 {
            let _ = writeln!(
                s,
                "  {} client address(es) dropped by the proxy to make room for new ones",
                self.clients_dropped
            );
        }
        let forgotten = self.flows_seen - self.flows.len() as u64;
        if forgotten > 0 {
            let _ = writeln!(
                s,
                "  {forgotten} client address(es) forgotten by the record (counted, not drawn)"
            );
        }
        for side in [Side::Client, Side::Server] {
            let c = &self.counts[side as usize];
            let _ = writeln!(
                s,
                "  {} -> {}: {} datagrams: {}",
                side.name(),
                side.other().name(),
                c.datagrams,
                c.describe("\n      ")
            );
        }
        let median = |v: &[Duration]| -> Option<Duration> {
            let mut v = v.to_vec();
            v.sort();
            v.get(v.len() / 2).copied()
        };
        match (median(&rtt.client), median(&rtt.server)) {
            (None, None) => {
                let _ = writeln!(s, "  RTT: no first-transmission Data was acknowledged");
            }
            (c, sv) => {
                let show = |d: Option<Duration>| {
                    d.map_or("n/a".to_string(), |d| {
                        format!("{:.3} ms", d.as_secs_f64() * 1e3)
                    })
                };
                let total = c.unwrap_or_default() + sv.unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  RTT (median Data-to-Ack through the proxy, first transmissions): client side {} ({} samples), server side {} ({} samples), end to end about {:.3} ms",
                    show(c),
                    rtt.client.len(),
                    show(sv),
                    rtt.server.len(),
                    total.as_secs_f64() * 1e3
                );
            }
        }
        if self.held_dropped > 0 {
            let _ = writeln!(
                s,
                "  {} delayed or reordered copies dropped: the queue of held copies was full",
                self.held_dropped
            );
        }
        if stalls.0 > 0 {
            let _ = writeln!(
                s,
                "  the proxy was held up {} (longest {:.0} ms): the timer rules allowed for it",
                match stalls.0 {
                    1 => "once".to_string(),
                    n => format!("{n} times"),
                },
                stalls.1.as_secs_f64() * 1e3
            );
        }
        if self.by_rule.is_empty() {
            let _ = writeln!(s, "  no rule broken");
        } else {
            let _ = writeln!(s, "  violations by rule:");
            for ((rule, side), n) in &self.by_rule {
                let _ = writeln!(s, "    {rule} ({}): {n}", side.name());
            }
        }
        let _ = write!(s, "violations: {}", self.violation_count());
        s
    }
}
