//! The condition variables writers wait on for room in a send buffer,
//! striped by connection id: a change on one connection wakes only the
//! writers of its stripe, and a wake with no one waiting costs one load.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

/// Condition variables writers wait on for room, striped by connection id
/// so that a change on one connection wakes few others' writers.
pub(crate) struct Rooms {
    stripes: Box<[Stripe]>,
}

/// One stripe: the lock a writer checks its condition under, the condition
/// variable it waits on, and how many writers are between registering and
/// leaving, so that a wake with no one waiting costs one atomic load.
#[derive(Default)]
pub(super) struct Stripe {
    /// Lock `room stripe`: held by a writer while it checks for room, and
    /// by a waker while it notifies, so that no wake-up is lost.
    pub(super) lock: Mutex<()>,
    pub(super) room: Condvar,
    pub(super) waiters: AtomicUsize,
}

impl Rooms {
    const STRIPES: usize = 64;

    pub(super) fn new() -> Rooms {
        Rooms {
            stripes: (0..Self::STRIPES).map(|_| Stripe::default()).collect(),
        }
    }

    pub(super) fn stripe(&self, key: u32) -> &Stripe {
        &self.stripes[key as usize % Self::STRIPES]
    }

    /// Wakes the writers waiting on `key`'s stripe, if any. A writer
    /// registers before it checks its condition, and the change it waits
    /// for was made before this call: either this sees it registered, or
    /// its check sees the change. Taking the lock before notifying means no
    /// writer is between its check and its wait.
    pub(super) fn wake(&self, key: u32) {
        self.stripe(key).wake();
    }

    pub(super) fn wake_all(&self) {
        for stripe in self.stripes.iter() {
            stripe.wake();
        }
    }
}

impl Stripe {
    fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        drop(self.lock.lock());
        self.room.notify_all();
    }
}
