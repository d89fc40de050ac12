//! What a [`ServerCore`](super::ServerCore) is set up with: per-connection
//! limits, the memory budget and its floor, and the constants of the
//! server's policies.

use crate::proto::conn::{Room, MESSAGE_OVERHEAD};
use crate::proto::message::{max_payload, DEFAULT_MAX_DATAGRAM};
use crate::Params;

/// How much a connection may hold on each side before flow control acts.
///
/// # Examples
///
/// ```
/// use liveseq::proto::Limit;
///
/// let limit = Limit { messages: 2, bytes: 100 };
/// assert!(!limit.reached(1, 99));
/// assert!(limit.reached(2, 0) && limit.reached(0, 100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    /// At most this many messages.
    pub messages: usize,
    /// At most this many payload bytes.
    pub bytes: usize,
}

impl Limit {
    /// No limit at all.
    pub const UNLIMITED: Limit = Limit {
        messages: usize::MAX,
        bytes: usize::MAX,
    };

    /// Whether `messages` messages of `bytes` bytes in all fill it.
    pub fn reached(&self, messages: usize, bytes: usize) -> bool {
        messages >= self.messages || bytes >= self.bytes
    }

    /// What is left of it once `messages` messages of `bytes` bytes are
    /// held (no memory limit).
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::proto::Limit;
    ///
    /// let room = Limit { messages: 4, bytes: 100 }.room(1, 60);
    /// assert_eq!((room.messages, room.bytes), (3, 40));
    /// assert!(!Limit { messages: 4, bytes: 100 }.room(1, 100).fits(1));
    /// ```
    pub fn room(&self, messages: usize, bytes: usize) -> Room {
        Room {
            messages: self.messages.saturating_sub(messages),
            bytes: self.bytes.saturating_sub(bytes),
            memory: usize::MAX,
        }
    }
}

/// Default send buffer of a connection: 1,024 messages or 1 MiB, whichever
/// comes first. Enough to keep the largest useful window (a few hundred
/// messages) full, small enough that a fast writer holds little memory.
pub const DEFAULT_SEND_BUFFER: Limit = Limit {
    messages: 1024,
    bytes: 1 << 20,
};

/// Default inbox of a connection: 4,096 messages or 4 MiB delivered and not
/// yet read, whichever comes first. Past it, in-order Data is left
/// unacknowledged until the application reads.
pub const DEFAULT_INBOX: Limit = Limit {
    messages: 4096,
    bytes: 4 << 20,
};

/// Default server-wide memory budget: 128 MiB.
///
/// What the server holds for its connections beyond each one's floor (send
/// buffers, inboxes, reorder and held messages, queued events) shares this
/// pool. 128 MiB keeps 32 connections' full default inboxes, or 128 full
/// default send buffers, and bounds a server attacked by hundreds of peers
/// that fill everything it buffers for them to about this much plus
/// their floors (see [`ServerConfig::floor`]).
pub const DEFAULT_BUDGET: usize = 128 << 20;

/// Default cap on connections that have not yet proven that they receive
/// the server's datagrams (see [`ServerCore`](super::ServerCore)'s "Decisions written down").
pub const DEFAULT_MAX_UNVALIDATED: usize = 1024;

/// The share of the budget kept free for admitting new connections: the
/// connections' own use of the budget stops at `budget - budget /
/// RESERVE_DIVISOR`, while a Connect may use all of it. (A sixteenth: 8 MiB
/// of the default budget, room for the events of some 32,000 admissions.)
pub const RESERVE_DIVISOR: usize = 16;

/// The part of the budget only admissions may use, whatever else happens:
/// a sixty-fourth (2 MiB of the default budget, the events of some 8,000
/// admissions). The rest of the reserve is open, while connections contend,
/// to those still under their fair share: a reader that holds little gets
/// room even when hoarders took everything before the share was set.
pub const ADMISSION_DIVISOR: usize = 64;

/// What a queued event for the application is charged against the budget
/// (the event itself, its place in the channel, a margin).
pub const EVENT_COST: usize = 128;

/// Epochs a live connection has to answer after a Connect with another
/// ISN arrives from its address (RFC 5961's stance on a SYN for an
/// established connection): anything carrying its id within them keeps it.
pub const CHALLENGE_EPOCHS: u32 = 2;

/// The most bytes a server sends to an address that has not proven it
/// receives the server's datagrams, per byte received from it (RFC 9000,
/// section 8.1).
pub const AMPLIFICATION_FACTOR: u64 = 3;

/// The largest connection id handed out: Go peers decode `ConnID` into an
/// `int`, and courses' code often into 32-bit ones.
pub const MAX_CONN_ID: u32 = i32::MAX as u32;

/// What a [`ServerCore`](super::ServerCore) is set up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Protocol parameters.
    pub params: Params,
    /// Most connections at once.
    pub max_connections: usize,
    /// Acknowledge bursts of in-order Data once per batch.
    pub coalesce_acks: bool,
    /// Per-connection limit on written, unacknowledged messages. Past it the
    /// connection is not writable (see [`ServerCore::is_writable`](super::ServerCore::is_writable)).
    pub send_buffer_limit: Limit,
    /// Per-connection limit on delivered, unread messages.
    pub inbox_limit: Limit,
    /// Server-wide memory budget in bytes, beyond each connection's floor.
    pub budget: usize,
    /// Memory each connection may use outside the shared budget: a window's
    /// worth of the largest messages each way, so that no crowd of other
    /// connections can starve it.
    pub floor: usize,
    /// Most connections not yet validated at once; at the cap, the oldest
    /// of them makes way for a new one.
    pub max_unvalidated: usize,
    /// Whether each connection's `Connected` and terminal events are charged
    /// to the budget until the application reads them (they queue for one
    /// reader). A driver that hands each connection's events to that
    /// connection's own queue, where at most two of them can wait, turns
    /// this off.
    pub charge_events: bool,
    /// Seed of the random connection ids, or `None` for ids 1, 2, 3, ...
    /// (predictable: for tests and tools only; a server on a network must
    /// use random ids, or anyone can guess them).
    pub id_seed: Option<u64>,
}

impl ServerConfig {
    /// `params` with no connection limit, CAck coalescing, the default
    /// buffer limits and budget, and random connection ids.
    pub fn new(params: Params) -> ServerConfig {
        ServerConfig {
            params,
            max_connections: usize::MAX,
            coalesce_acks: true,
            send_buffer_limit: DEFAULT_SEND_BUFFER,
            inbox_limit: DEFAULT_INBOX,
            budget: DEFAULT_BUDGET,
            floor: ServerConfig::floor_for(params, max_payload(DEFAULT_MAX_DATAGRAM)),
            max_unvalidated: DEFAULT_MAX_UNVALIDATED,
            charge_events: true,
            id_seed: Some(rand::random()),
        }
    }

    /// What the connections together may draw from the budget: all of it
    /// but the reserve (see [`RESERVE_DIVISOR`]).
    pub fn shared_budget(&self) -> usize {
        self.budget - self.budget / RESERVE_DIVISOR
    }

    /// What connections under their fair share may draw up to while
    /// connections contend: all but the admissions' part
    /// ([`ADMISSION_DIVISOR`]).
    pub fn under_share_budget(&self) -> usize {
        self.budget - self.budget / ADMISSION_DIVISOR
    }

    /// The floor that guarantees a connection a window's worth of messages
    /// of up to `max_payload` bytes each way.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::proto::{ServerConfig, MESSAGE_OVERHEAD};
    /// use liveseq::Params;
    ///
    /// let floor = ServerConfig::floor_for(Params::default(), 1000);
    /// assert_eq!(floor, 2 * (1000 + MESSAGE_OVERHEAD));
    /// ```
    pub fn floor_for(params: Params, max_payload: usize) -> usize {
        (params.window_size as usize)
            .saturating_mul(2)
            .saturating_mul(max_payload.saturating_add(MESSAGE_OVERHEAD))
    }
}
