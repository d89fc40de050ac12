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
#[derive(Debug)]
pub(super) struct Pool {
    /// Memory charged beyond the connections' floors.
    used: AtomicUsize,
    /// Application events handed out and not yet read (messages aside).
    events_unread: AtomicUsize,
    /// Connections that are not writable now.
    pub unwritable: AtomicUsize,
    /// The most a connection may draw from the budget now (its fair share,
    /// see [`fair_share`]), or `usize::MAX` while nobody contends.
    share: AtomicUsize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            used: AtomicUsize::new(0),
            events_unread: AtomicUsize::new(0),
            unwritable: AtomicUsize::new(0),
            share: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Pool {
    /// The most one connection may draw from the budget now.
    pub fn share(&self) -> usize {
        self.share.load(Relaxed)
    }

    /// Sets the share for the next epoch.
    pub fn set_share(&self, share: usize) {
        self.share.store(share, Relaxed);
    }

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

/// Max-min fair share of `capacity` bytes among connections that draw
/// `draws` from it (what each holds beyond its floor, and whether it wanted
/// more in the last epoch: Data paused or a write refused for lack of
/// memory).
///
/// A connection that wants no more keeps what it holds while that is under
/// the share; what is left is split evenly among the others, so the share is
/// the water level at which `capacity` is used up. With nobody wanting more
/// there is no contention and no cap (`usize::MAX`): a lone connection may
/// use the whole budget.
pub(super) fn fair_share(capacity: usize, draws: &mut [(usize, bool)]) -> usize {
    if !draws.iter().any(|&(_, wants_more)| wants_more) {
        return usize::MAX;
    }
    // Those that want more have no demand short of the share: last.
    draws.sort_unstable_by_key(|&(held, wants_more)| (wants_more, held));
    let mut left = capacity;
    let mut sharing = draws.len();
    for &(held, wants_more) in draws.iter() {
        let level = left / sharing;
        if wants_more || held > level {
            return level;
        }
        left -= held;
        sharing -= 1;
    }
    // Not reached: someone wants more, and is sorted last.
    left
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn no_contention_no_cap() {
        assert_eq!(fair_share(100, &mut [(90, false), (5, false)]), usize::MAX);
        assert_eq!(fair_share(100, &mut []), usize::MAX);
    }

    #[test]
    fn small_users_keep_theirs_and_the_rest_is_split() {
        // 10 and 20 are under the even share (100 / 4 = 25): kept; the
        // other 70 is split between the two that want more.
        let mut draws = [(60, true), (10, false), (0, true), (20, false)];
        assert_eq!(fair_share(100, &mut draws), 35);
    }

    #[test]
    fn a_large_holder_that_wants_no_more_is_capped_too() {
        // 80 is over the level it would get: the level is the even share.
        let mut draws = [(80, false), (0, true)];
        assert_eq!(fair_share(100, &mut draws), 50);
    }

    #[test]
    fn one_contender_alone_may_use_what_others_leave() {
        let mut draws = [(10, false), (10, false), (50, true)];
        assert_eq!(fair_share(100, &mut draws), 80);
    }
}
