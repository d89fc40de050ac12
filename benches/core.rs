//! Criterion benchmarks of the hot pieces: encoding, decoding, checksum and
//! the state machine. Run with `cargo bench`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use liveseq::proto::Conn;
use liveseq::proto::{checksum, Message};
use liveseq::Params;

fn codec(c: &mut Criterion) {
    for size in [100usize, 1024] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let msg = Message::data(17, 123_456, &payload);
        let mut buf = Vec::with_capacity(2048);
        let mut group = c.benchmark_group(format!("data_{size}B"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&msg).encode(&mut buf);
            })
        });
        let encoded = {
            let mut v = Vec::new();
            msg.encode(&mut v);
            v
        };
        group.bench_function("decode", |b| {
            b.iter(|| Message::decode(black_box(&encoded)).unwrap())
        });
        group.bench_function("checksum", |b| {
            b.iter(|| checksum(17, 123_456, size as u64, black_box(&payload)))
        });
        group.finish();
    }
    let mut ack = Vec::new();
    Message::ack(17, 123_456).encode(&mut ack);
    c.bench_function("ack_decode", |b| {
        b.iter(|| Message::decode(black_box(&ack)).unwrap())
    });
}

/// One window of 32 messages written, sent, acknowledged and received.
fn state_machine(c: &mut Criterion) {
    let params = Params {
        window_size: 32,
        max_unacked_messages: 32,
        ..Params::default()
    };
    let payload = vec![7u8; 100];
    c.bench_function("conn_window_32", |b| {
        b.iter(|| {
            let mut sender = Conn::server(params, 1, 1000);
            let mut receiver = Conn::client(params, 1000);
            while receiver.poll_transmit().is_some() {}
            receiver.handle(Message::ack(1, 1000)).unwrap();
            while sender.poll_transmit().is_some() {}
            for _ in 0..32 {
                sender.write(payload.clone());
            }
            let mut acks = Vec::new();
            while let Some(msg) = sender.poll_transmit() {
                receiver.handle(msg).unwrap();
                while let Some(ack) = receiver.poll_transmit() {
                    acks.push(ack.into_owned());
                }
            }
            for ack in acks {
                sender.handle(ack).unwrap();
            }
            while receiver.poll_delivered().is_some() {}
            black_box(sender.unacked())
        })
    });
}

criterion_group!(benches, codec, state_machine);
criterion_main!(benches);
