//! The rules, and the findings that report a breach of one: what a
//! [`Violation`] names, what [`Seen`] tells the caller, and the wording of
//! their details.

use std::fmt;
use std::time::Duration;

use liveseq::proto::{Message, MsgType};

use super::Side;

/// A protocol rule (docs/PROTOCOL.md) the checker enforces. [`Rule::name`] is what reports print.
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

/// The datagram being judged, as each [`Violation`] it proves names it:
/// one value for every check, instead of the same five arguments each.
#[derive(Clone, Copy, Debug)]
pub(super) struct Origin {
    /// When the proxy received it.
    pub(super) at: Duration,
    /// The client address (flow number) it came from or went to.
    pub(super) flow: usize,
    /// The side that sent it.
    pub(super) from: Side,
    /// Its index (the proxy numbers every datagram).
    pub(super) datagram: usize,
    /// The connection it names (none for a Connect or a malformed datagram).
    pub(super) conn: Option<u32>,
}

impl Origin {
    /// Records that this datagram proves a breach of `rule`.
    pub(super) fn report(&self, seen: &mut Seen, rule: Rule, detail: String) {
        seen.violations.push(Violation {
            rule,
            side: self.from,
            flow: self.flow,
            conn: self.conn,
            datagram: self.datagram,
            at: self.at,
            detail,
        });
    }
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(super) fn kind_name(msg: &Message<'_>) -> String {
    match msg.kind {
        MsgType::Ack if msg.seq_num == 0 => "a heartbeat".to_string(),
        MsgType::Connect => "Connect".to_string(),
        MsgType::Data => format!("Data {}", msg.seq_num),
        MsgType::Ack => "Ack".to_string(),
        MsgType::CAck => "CAck".to_string(),
    }
}

pub(super) fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
