//! One connection of a server, as the table holds it behind its own lock:
//! the protocol state machine and what the server keeps beside it (flow
//! control, validation, the challenge, the memory it is charged).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::counters::Pool;
use super::ServerConfig;
use crate::proto::conn::{Conn, Phase, Room, MESSAGE_OVERHEAD};
use crate::proto::stats::Timing;
use crate::proto::ConnState;

/// One connection in the table.
#[derive(Debug)]
pub(crate) struct Slot {
    pub id: u32,
    pub addr: SocketAddr,
    /// The address its Connect was sent to, on a server bound to a
    /// wildcard address: what it sends leaves from there.
    pub local: Option<IpAddr>,
    pub conn: Conn,
    pub timing: Timing,
    /// It has left the table: a thread that looked it up before that finds
    /// it here once it has the lock, and handles nothing more for it.
    pub gone: bool,
    /// Delivered and not yet read (flow control), the messages in `backlog` included.
    pub unread: (usize, usize),
    /// Delivered while the connection was not writable: handed to the
    /// application once it is (Netty's auto-read, off).
    pub backlog: VecDeque<Vec<u8>>,
    /// Its send buffer passed its limit and has not yet drained to half.
    pub unwritable: bool,
    /// Its send buffer is at its limit (a `try_write` fails): when that
    /// ends, a `Room` output wakes whoever waits to write.
    pub full: bool,
    /// The peer sent a message carrying the connection's id: it receives
    /// what the server sends to its address.
    pub validated: bool,
    /// Bytes received from and sent to the address while not validated.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Epochs left to answer a challenge (a Connect with another ISN).
    pub challenge: Option<u32>,
    /// Memory charged to the connection now.
    pub charged: usize,
    /// The connection holds Data it could not take (`Withholding` output).
    pub withholding: bool,
    /// Admission order, for evicting the oldest unvalidated connection.
    pub admitted: u64,
    /// Datagrams of this connection went unsent since the last epoch (the
    /// 3x limit, a challenge): that epoch does not count toward its stall.
    pub unsent: bool,
    /// It wanted more memory than it could have since the last epoch (Data
    /// paused, or a write refused, for lack of budget): it contends for the
    /// budget in the next fair share.
    pub wants_more: bool,
    /// A write to it was refused for lack of budget since it last
    /// acknowledged anything: with nothing acknowledged for its stall limit
    /// it is a slow consumer, as one whose send buffer is full.
    pub refused_write: bool,
    /// Messages it had acknowledged at the last epoch.
    pub acked_at_tick: u64,
}

impl Slot {
    /// Whether the send buffer is at `config`'s limit.
    pub fn is_full(&self, config: &ServerConfig) -> bool {
        config.send_buffer_limit.reached(
            self.conn.unacked() + self.conn.queued(),
            self.conn.send_buffered().1,
        )
    }

    /// How much more memory it may take now: the rest of its floor, then
    /// what is left of the budget up to its fair share
    /// ([`fair_share`](super::counters::fair_share)). The budget less the
    /// reserve, that is, except for a connection still under its share while
    /// connections contend, which may also draw on the reserve but for the
    /// admissions' part.
    pub fn memory_room(&self, config: &ServerConfig, pool: &Pool) -> usize {
        let share = pool.share();
        let drawn = self.drawn(config);
        let ceiling = if share != usize::MAX && drawn < share {
            config.under_share_budget()
        } else {
            config.shared_budget()
        };
        let shared_left = ceiling.saturating_sub(pool.in_use());
        let share_left = share.saturating_sub(drawn);
        config
            .floor
            .saturating_sub(self.charged)
            .saturating_add(shared_left.min(share_left))
    }

    /// What it draws from the shared budget: its charge beyond its floor.
    pub fn drawn(&self, config: &ServerConfig) -> usize {
        self.charged.saturating_sub(config.floor)
    }

    /// Whether its inbox is at its limit (the application is behind, not
    /// the budget).
    pub fn inbox_full(&self, config: &ServerConfig) -> bool {
        config.inbox_limit.reached(self.unread.0, self.unread.1)
    }

    /// Tells the connection how much it may take now: its inbox (the
    /// reorder buffer counts against it) and memory; past that, a window's
    /// worth is withheld (kept unacknowledged) so that the next read takes it
    /// at once.
    pub fn set_room(&mut self, config: &ServerConfig, pool: &Pool) {
        let memory = self.memory_room(config, pool);
        let (buffered, buffered_bytes) = self.conn.reorder_buffered();
        let room = Room {
            memory,
            ..config
                .inbox_limit
                .room(self.unread.0 + buffered, self.unread.1 + buffered_bytes)
        };
        let hold = Room {
            messages: (config.params.window_size as usize).saturating_sub(self.conn.withheld().0),
            bytes: usize::MAX,
            memory,
        };
        self.conn.set_receive_room(room, hold);
    }

    /// What it holds, as charged against the memory budget.
    pub fn charge(&self) -> usize {
        let cost = |(messages, bytes): (usize, usize)| {
            messages
                .saturating_mul(MESSAGE_OVERHEAD)
                .saturating_add(bytes)
        };
        cost(self.conn.send_buffered())
            .saturating_add(cost(self.unread))
            .saturating_add(cost(self.conn.reorder_buffered()))
            .saturating_add(cost(self.conn.withheld()))
    }

    /// The user-facing state, derived from the phase.
    pub fn state(&self) -> ConnState {
        match self.conn.phase() {
            Phase::Connecting => ConnState::Connecting,
            Phase::Open => ConnState::Connected,
            Phase::Closing => ConnState::Closing,
            Phase::Drained => ConnState::Closed,
            Phase::Lost => ConnState::Lost,
        }
    }
}
