//! What every connection of a server shares, kept in atomics so that no
//! connection waits for another to count: the totals, and the memory pool
//! drawn on beyond each connection's floor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::EVENT_COST;

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// Totals kept by the core.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub lost: AtomicU64,
    pub closed: AtomicU64,
    pub duplicate_connects: AtomicU64,
    pub malformed: AtomicU64,
    pub rejected: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub challenged_connects: AtomicU64,
    pub amplification_held_bytes: AtomicU64,
    pub budget_refusals: AtomicU64,
    pub evicted_unvalidated: AtomicU64,
}

/// The shared memory budget in use, and what is counted across connections.
///
/// Each connection's charge changes under its own lock, and the pool by
/// atomic adds: with several threads, two connections may both see the
/// last room in the pool and both take it, so the budget can be passed by
/// at most one message per thread feeding the core at that moment. A single
/// thread (the simulator, the tests) never passes it.
#[derive(Debug, Default)]
pub(super) struct Pool {
    /// Memory charged beyond the connections' floors.
    used: AtomicUsize,
    /// Application events handed out and not yet read (messages aside).
    events_unread: AtomicUsize,
    /// Connections that are not writable now.
    pub unwritable: AtomicUsize,
}

impl Pool {
    /// The shared budget in use: connections beyond their floors, and
    /// unread events.
    pub fn in_use(&self) -> usize {
        self.used
            .load(Relaxed)
            .saturating_add(self.events_unread.load(Relaxed).saturating_mul(EVENT_COST))
    }

    /// A connection's charge beyond its floor went from `old` to `new`.
    pub fn recharge(&self, old: usize, new: usize) {
        // Add before subtracting, so the count never wraps below zero.
        if new >= old {
            self.used.fetch_add(new - old, Relaxed);
        } else {
            self.used.fetch_sub(old - new, Relaxed);
        }
    }

    /// `n` application events were handed out.
    pub fn events_out(&self, n: usize) {
        self.events_unread.fetch_add(n, Relaxed);
    }

    /// The application read an event.
    pub fn event_read(&self) {
        let _ = self
            .events_unread
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// Unread application events.
    pub fn events_unread(&self) -> usize {
        self.events_unread.load(Relaxed)
    }
}
