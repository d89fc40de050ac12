//! How much more a connection may take in, for flow control.

use super::MESSAGE_OVERHEAD;

/// How much more a connection may take in: messages, payload bytes, and
/// memory (payload plus [`MESSAGE_OVERHEAD`] per message, for a server's
/// memory budget). See
/// [`Conn::set_receive_room`](super::Conn::set_receive_room).
///
/// # Examples
///
/// ```
/// use liveseq::proto::{Room, MESSAGE_OVERHEAD};
///
/// let room = Room { messages: 2, bytes: 100, memory: 1000 };
/// assert!(room.fits(100));
/// assert!(room.fits(500)); // the byte limit may be passed by one message
/// assert!(!room.fits(1000)); // memory may not: a message is not free
/// assert!(room.fits(1000 - MESSAGE_OVERHEAD));
/// assert!(!Room::NONE.fits(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Room {
    /// Messages that may still be taken.
    pub messages: usize,
    /// Payload bytes that may still be taken.
    pub bytes: usize,
    /// Memory that may still be taken, each message charged its payload
    /// plus [`MESSAGE_OVERHEAD`].
    pub memory: usize,
}

impl Room {
    /// No limit.
    pub const UNLIMITED: Room = Room {
        messages: usize::MAX,
        bytes: usize::MAX,
        memory: usize::MAX,
    };

    /// No room at all.
    pub const NONE: Room = Room {
        messages: 0,
        bytes: 0,
        memory: 0,
    };

    /// Whether one message of `len` payload bytes fits: a message may pass
    /// the byte limit (as a connection's inbox limit is "reached", not
    /// "exceeded", so a message larger than the limit is never stuck), but
    /// never the memory.
    pub fn fits(&self, len: usize) -> bool {
        self.messages > 0 && self.bytes > 0 && len.saturating_add(MESSAGE_OVERHEAD) <= self.memory
    }

    pub(super) fn take(&mut self, len: usize) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
        self.memory = self
            .memory
            .saturating_sub(len.saturating_add(MESSAGE_OVERHEAD));
    }
}
