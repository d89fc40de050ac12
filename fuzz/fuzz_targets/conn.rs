//! The per-connection state machine fed an arbitrary sequence of datagrams,
//! writes, closes and epoch ticks, checking its invariants after every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveseq::proto::{Conn, Phase};
use liveseq::Params;
use liveseq::proto::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let window = u32::from(head % 8) + 1;
    let params = Params {
        epoch_limit: u32::from(head >> 5) + 2,
        epoch_millis: 1,
        window_size: window,
        max_unacked_messages: (u32::from(head >> 3) % window) + 1,
        max_backoff_interval: u32::from(head % 5),
    };
    let isn = 1000;
    let mut conn = if head & 0x80 == 0 {
        Conn::server(params, 1, isn)
    } else {
        Conn::client(params, isn)
    };
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 8 {
            0 => conn.on_epoch(),
            1 => conn.write(vec![op; usize::from(op >> 3)]),
            2 => conn.close(),
            3 => conn.flush_acks(),
            4 => conn.set_coalesce_acks(op & 0x80 != 0),
            _ => {
                // A message near the connection's sequence numbers, or raw bytes.
                let take = usize::from(op >> 3).min(rest.len());
                let (bytes, tail) = rest.split_at(take);
                rest = tail;
                let seq = isn + u64::from(bytes.first().copied().unwrap_or(0));
                let msg = match op % 8 {
                    5 => Message::data(1, seq, bytes),
                    6 if op & 0x40 != 0 => Message::cack(1, seq),
                    6 => Message::ack(1, seq),
                    _ => match Message::decode(bytes) {
                        Ok(m) => m.into_owned(),
                        Err(_) => continue,
                    },
                };
                let _ = conn.handle(msg);
            }
        }
        while conn.poll_transmit().is_some() {}
        while conn.poll_delivered().is_some() {}
        while conn.poll_event().is_some() {}
        assert!(conn.buffered() < window as usize);
        assert!(conn.unacked() <= params.max_unacked_messages as usize);
        if let Some(last) = conn.in_flight().last() {
            assert!(last < conn.oldest_unacked() + u64::from(window));
        }
        if matches!(conn.phase(), Phase::Lost | Phase::Drained) {
            assert!(conn.is_idle());
        }
    }
});
