//! One datagram's way through the proxy: checked, given a fate, recorded,
//! then sent on at once or held back.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use liveseq::proto::Message;

use crate::check::Side;
use crate::record::Datagram;

use super::held::{Held, MAX_HELD_BYTES};
use super::Shared;

/// Violations printed as they happen; later ones are only counted.
pub(super) const PRINTED: usize = 100;

/// Where a datagram goes: up a connected upstream socket, or down the
/// listening socket to a client.
#[derive(Clone)]
pub(super) struct Out {
    pub(super) socket: Arc<UdpSocket>,
    pub(super) to: Option<SocketAddr>,
}

impl Out {
    pub(super) fn send(&self, bytes: &[u8]) {
        // A failed send is a lost datagram, which LSP survives; an endpoint
        // that went away (ECONNREFUSED) must not stop the proxy.
        let _ = match self.to {
            Some(to) => self.socket.send_to(bytes, to),
            None => self.socket.send(bytes),
        };
    }
}

/// [`handle`], surviving a bug: a panic while handling one datagram costs
/// that datagram (LSP resends it) and is reported once, instead of ending
/// the thread that forwards everything else.
pub(super) fn guarded(
    shared: &Shared,
    flow: usize,
    client: SocketAddr,
    from: Side,
    bytes: &[u8],
    out: &Out,
) {
    let run = || handle(shared, flow, client, from, bytes, out);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err()
        && !shared.panicked.swap(true, Ordering::SeqCst)
    {
        eprintln!(
            "lsp-inspect: internal error handling a datagram from the {}; carrying on",
            from.name()
        );
    }
}

/// Checks, decides, records and forwards one datagram.
fn handle(shared: &Shared, flow: usize, client: SocketAddr, from: Side, bytes: &[u8], out: &Out) {
    let msg = Message::decode(bytes);
    let msg = msg.as_ref().map_err(|e| *e);
    let mut guard = shared.lock();
    let st = &mut *guard;
    let at = shared.start.elapsed();
    let index = st.next_index;
    st.next_index += 1;
    let seen = st.checker.sent(at, flow, from, index, msg);
    let decision = st.faults.decide(at, flow, from, msg.ok());
    st.recorder.datagram(&Datagram {
        index,
        at,
        flow,
        client,
        from,
        raw: bytes,
        msg,
        seen: &seen,
        decision: &decision,
    });
    for v in &seen.violations {
        if st.printed < PRINTED {
            println!(
                "violation #{index} at {:.3} s: {} by the {} of {client}{}: {}",
                at.as_secs_f64(),
                v.rule,
                v.side.name(),
                v.conn.map_or(String::new(), |c| format!(" (conn {c})")),
                v.detail
            );
        } else if st.printed == PRINTED {
            println!("(further violations are only counted)");
        }
        st.printed = st.printed.saturating_add(1);
    }
    let wire = decision.replacement.as_deref().unwrap_or(bytes);
    let replaced = decision.replacement.as_deref().map(Message::decode);
    let delivered = match &replaced {
        Some(m) => m.as_ref().map_err(|e| *e),
        None => msg,
    };
    let mut held = Vec::new();
    for &delay in &decision.copies {
        if delay.is_zero() {
            out.send(wire);
            st.checker
                .delivered(shared.start.elapsed(), flow, from.other(), delivered);
        } else {
            held.push((delay, wire.to_vec()));
        }
    }
    drop(guard);
    shared.changed.notify_all();
    if !held.is_empty() {
        let now = Instant::now();
        let mut q = shared.held.lock().unwrap_or_else(|e| e.into_inner());
        for (delay, bytes) in held {
            // A delay beyond what a clock can hold is a drop, and so is a
            // copy beyond what the queue may hold.
            let Some(due) = now.checked_add(delay) else {
                continue;
            };
            if q.bytes + bytes.len() > MAX_HELD_BYTES {
                shared.held_dropped.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            q.bytes += bytes.len();
            q.order += 1;
            let order = q.order;
            q.heap.push(Held {
                due,
                order,
                index,
                flow,
                to: from.other(),
                out: out.clone(),
                bytes,
            });
        }
        drop(q);
        shared.held_changed.notify_all();
    }
}
