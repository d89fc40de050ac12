//! The per-connection state machine fed an arbitrary sequence of datagrams,
//! writes, closes and epoch ticks, checking its invariants after every step.
//!
//! Everything comes from the input, biased toward the edges: the ISN (any
//! u64, often 0, 2^32, 2^62, 2^63, u64::MAX or a neighbour), the parameters
//! (window, max unacked, back-off cap and epoch limit, each anywhere in its
//! valid range, often at an end of it; max unacked may exceed the window), and each message's sequence number
//! (near the next expected, the oldest unacknowledged, the next unsent, the
//! ISN or the end of the window, or an edge value).
//!
//! Input layout: a header (role, ISN, parameters), then operations, one
//! byte each plus what that operation reads. Missing bytes read as zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveseq::proto::{Conn, Message, MsgType, Phase};
use liveseq::Params;

const EDGES: [u64; 16] = [
    0,
    1,
    2,
    u32::MAX as u64 - 1,
    u32::MAX as u64,
    1 << 32,
    (1 << 32) + 1,
    (1 << 62) - 2,
    (1 << 62) - 1,
    1 << 62,
    (1 << 63) - 2,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX - 2,
    u64::MAX - 1,
    u64::MAX,
];

const EDGES32: [u32; 8] = [
    0,
    1,
    2,
    1 << 16,
    1 << 31,
    u32::MAX - 2,
    u32::MAX - 1,
    u32::MAX,
];

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let head = self.bytes(8);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }

    /// A small signed offset.
    fn delta(&mut self) -> i64 {
        i64::from(self.byte() as i8)
    }

    /// Any u64, half the time an edge value or one near it.
    fn edgy_u64(&mut self) -> u64 {
        let sel = self.byte();
        let edge = EDGES[usize::from(sel >> 4)];
        match sel % 4 {
            0 | 1 => edge,
            2 => edge.wrapping_add_signed(self.delta()),
            _ => self.u64(),
        }
    }

    /// A u32 in `lo..=u32::MAX`: mostly small, sometimes an edge value.
    fn edgy_u32(&mut self, lo: u32) -> u32 {
        let sel = self.byte();
        let v = match sel % 4 {
            0 | 1 => u32::from(sel >> 2), // 0..=63
            2 => EDGES32[usize::from(sel >> 5)],
            _ => self.u64() as u32,
        };
        v.max(lo)
    }
}

/// A sequence number near one the connection cares about, or an edge value.
fn seq(input: &mut Input<'_>, conn: &Conn, isn: u64, window: u32) -> u64 {
    let sel = input.byte();
    let near = |base: u64, input: &mut Input<'_>| base.wrapping_add_signed(input.delta());
    match sel % 6 {
        0 => near(conn.next_expected(), input),
        1 => near(conn.oldest_unacked(), input),
        2 => near(conn.next_unsent(), input),
        3 => near(isn, input),
        4 => near(conn.next_expected().wrapping_add(u64::from(window)), input),
        _ => input.edgy_u64(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let role = input.byte();
    let isn = input.edgy_u64();
    let window = input.edgy_u32(1);
    // Any positive value: above the window too (the Go API accepts that).
    let max_unacked = match input.byte() % 4 {
        0 => window,
        1 => 1,
        _ => input.edgy_u32(1),
    };
    let params = Params {
        epoch_limit: input.edgy_u32(1),
        epoch_millis: 1,
        window_size: window,
        max_unacked_messages: max_unacked,
        max_backoff_interval: input.edgy_u32(0),
    };
    params
        .validate()
        .expect("the target builds valid parameters");
    let server_id = match role >> 1 {
        0 => u32::MAX,
        n => u32::from(n),
    };
    let mut conn = if role & 1 == 0 {
        Conn::server(params, server_id, isn)
    } else {
        Conn::client(params, isn)
    };
    while !input.is_empty() {
        let op = input.byte();
        match op % 11 {
            0 => conn.on_epoch(),
            1 => conn.write(vec![op; usize::from(op >> 2)]),
            2 => conn.close(),
            3 => conn.flush_acks(),
            4 => conn.set_coalesce_acks(op & 0x80 != 0),
            5 | 6 => {
                // Data: usually for this connection with a good checksum.
                let sn = seq(&mut input, &conn, isn, window);
                let payload = input.bytes(usize::from(op >> 4));
                let id = if op & 0x80 == 0 {
                    conn.conn_id()
                } else {
                    server_id ^ 1
                };
                let mut msg = Message::data(id, sn, payload);
                if op & 0x40 != 0 {
                    // A Size the payload does not meet, or a wrong checksum.
                    msg.size = input.edgy_u64();
                }
                let _ = conn.handle(msg);
            }
            7 => {
                let sn = seq(&mut input, &conn, isn, window);
                let id = if op & 0x80 == 0 {
                    conn.conn_id()
                } else {
                    input.byte().into()
                };
                let msg = if op & 0x40 == 0 {
                    Message::ack(id, sn)
                } else {
                    Message::cack(id, sn)
                };
                let _ = conn.handle(msg);
            }
            8 => {
                let sn = seq(&mut input, &conn, isn, window);
                let _ = conn.handle(Message::connect(sn));
            }
            9 => {
                // Raw bytes through the decoder.
                let bytes = input.bytes(usize::from(op >> 2));
                if let Ok(m) = Message::decode(bytes) {
                    let _ = conn.handle(m.into_owned());
                }
            }
            _ => {
                if op & 0x80 != 0 {
                    conn.abort();
                } else {
                    conn.take_orphans();
                }
            }
        }
        check(&mut conn, &params);
    }
});

/// The invariants, in u128 so the checks themselves cannot overflow.
fn check(conn: &mut Conn, params: &Params) {
    let window = u128::from(params.window_size);
    let oldest = u128::from(conn.oldest_unacked());
    while let Some(msg) = conn.poll_transmit() {
        if msg.kind == MsgType::Data {
            let sn = u128::from(msg.seq_num);
            assert!(
                oldest <= sn && sn < oldest + window,
                "sent {sn} outside the window [{oldest}, {oldest} + {window})"
            );
            let mut copy = msg.clone();
            assert!(copy.verify_data(), "sent Data that fails its own checksum");
        }
    }
    while conn.poll_delivered().is_some() {}
    while conn.poll_event().is_some() {}
    assert!((conn.buffered() as u128) < window);
    assert!(conn.unacked() as u128 <= window.min(params.max_unacked_messages.into()));
    if let Some(last) = conn.in_flight().last() {
        assert!(u128::from(last) < u128::from(conn.oldest_unacked()) + window);
    }
    if matches!(conn.phase(), Phase::Lost | Phase::Drained) {
        assert!(conn.is_idle());
    }
}
