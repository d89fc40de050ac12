//! The delayed-copy queue: copies held back by a delay or reorder fault,
//! and the thread that sends them when they are due.

use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use liveseq::proto::Message;

use crate::check::Side;

use super::forward::Out;
use super::{Shared, POLL};

/// Bytes of held-back copies (delay, reorder) queued at most; a copy that
/// would go beyond is dropped.
pub(super) const MAX_HELD_BYTES: usize = 16 << 20;

/// A copy held back by a delay or reorder fault.
pub(super) struct Held {
    pub(super) due: Instant,
    pub(super) order: u64,
    pub(super) index: usize,
    pub(super) flow: usize,
    pub(super) to: Side,
    pub(super) out: Out,
    pub(super) bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed, so that the max-heap yields the earliest first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// Held-back copies, earliest first, and what they hold.
#[derive(Default)]
pub(super) struct HeldQueue {
    pub(super) heap: BinaryHeap<Held>,
    pub(super) order: u64,
    /// Bytes in all the copies held (at most [`MAX_HELD_BYTES`]).
    pub(super) bytes: usize,
}

/// Sends held-back copies when they are due.
pub(super) fn held_loop(shared: &Arc<Shared>) {
    let mut q = shared.held.lock().unwrap_or_else(|e| e.into_inner());
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        match q.heap.peek() {
            Some(h) if h.due <= now => {
                let Some(h) = q.heap.pop() else { continue };
                q.bytes -= h.bytes.len();
                drop(q);
                let mut st = shared.lock();
                h.out.send(&h.bytes);
                let at = shared.start.elapsed();
                let msg = Message::decode(&h.bytes);
                st.checker
                    .delivered(at, h.flow, h.to, msg.as_ref().map_err(|e| *e));
                st.recorder.released(h.index, at);
                drop(st);
                q = shared.held.lock().unwrap_or_else(|e| e.into_inner());
            }
            next => {
                let wait = next.map_or(POLL, |h| h.due.saturating_duration_since(now).min(POLL));
                q = shared
                    .held_changed
                    .wait_timeout(q, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}
