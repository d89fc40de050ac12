//! What one received Data message may cost in memory. Alone in its binary:
//! it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use liveseq::proto::{Conn, Message};
use liveseq::Params;

/// Counts the bytes this thread asks for (growth included, frees ignored).
struct Counting;

thread_local! {
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = REQUESTED.try_with(|r| r.set(r.get().saturating_add(bytes)));
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe {
            count(layout.size());
            System.alloc(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            count(new_size.saturating_sub(layout.size()));
            System.realloc(ptr, layout, new_size)
        }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn requested() -> usize {
    REQUESTED.with(Cell::get)
}

/// Found by the `conn` fuzz target: with a large receive window, one Data
/// message from the peer at the far end of the window made the receiver
/// allocate a buffer slot for every sequence number up to it (24 bytes per
/// slot, whatever arrived): a window of 2^20 cost 24 MiB per such datagram,
/// a window of u32::MAX aborted the process on a 96 GiB allocation. Memory
/// for out-of-order messages grows with what arrived, not with the window.
#[test]
fn one_far_message_costs_memory_by_its_size_not_the_window() {
    let window = 1 << 20;
    let params = Params {
        window_size: window,
        max_unacked_messages: window,
        ..Params::default()
    };
    let isn = 1000;
    let mut conn = Conn::server(params, 1, isn);
    while conn.poll_transmit().is_some() {}
    let far = isn + u64::from(window); // the last sequence number inside the window
    let msg = Message::data(1, far, b"far").into_owned();
    let before = requested();
    conn.handle(msg).expect("inside the window");
    let cost = requested() - before;
    assert_eq!(conn.reorder_buffered().0, 1);
    assert!(
        cost < 64 << 10,
        "one 3-byte message inside a window of {window} cost {cost} bytes"
    );
}

/// The same message near the start of the window costs next to nothing
/// (the counter works, and the cost above is the window's).
#[test]
fn a_near_message_costs_little() {
    let params = Params {
        window_size: 1 << 20,
        max_unacked_messages: 1 << 20,
        ..Params::default()
    };
    let isn = 1000;
    let mut conn = Conn::server(params, 1, isn);
    while conn.poll_transmit().is_some() {}
    let msg = Message::data(1, isn + 3, b"near").into_owned();
    let before = requested();
    conn.handle(msg).expect("inside the window");
    let cost = requested() - before;
    assert_eq!(conn.reorder_buffered().0, 1);
    assert!(cost > 0 && cost < 64 << 10, "cost {cost} bytes");
}
