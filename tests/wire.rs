//! The wire format: checksum vectors and the JSON encoding, byte for byte as
//! the Go reference writes them.
//!
//! The checksum is recomputed here by a second, independent implementation
//! written from the rules in SPEC.md (32-bit arithmetic with explicit
//! masking, rather than the library's 16-bit wrapping), and both are checked
//! against the reference table and a vector worked by hand.

use liveseq::proto::{checksum, Message, MsgType};

/// SPEC.md's checksum rules, step by step.
fn spec_checksum(conn_id: u64, seq_num: u64, size: u64, payload: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    for value in [conn_id, seq_num, size] {
        let v = value & 0xFFFF_FFFF; // as an unsigned 32-bit integer
        let (low, high) = (v & 0xFFFF, v >> 16);
        acc += (low + high) & 0xFFFF; // added in 16 bits: the carry is lost
    }
    let mut i = 0;
    while i < payload.len() {
        let low = u64::from(payload[i]);
        let high = payload.get(i + 1).map_or(0, |&b| u64::from(b));
        acc += low | (high << 8); // little-endian words, odd byte padded
        i += 2;
    }
    while acc > 0xFFFF {
        acc = (acc >> 16) + (acc & 0xFFFF);
    }
    !(acc as u16)
}

const VECTORS: &[(u32, u64, u64, &[u8], u16)] = &[
    (1, 1001, 5, b"hello", 10701),
    (1, 1, 0, b"", 65533),
    (7, 3, 5, b"third", 9391),
    (2, 131071, 1, b"\xff", 65277),
    (3, 4294967295, 3, b"abc", 40246),
    (65535, 65535, 65535, b"\xff\xff\xff", 65280),
];

#[test]
fn reference_checksum_vectors() {
    for &(c, s, z, p, want) in VECTORS {
        assert_eq!(
            spec_checksum(u64::from(c), s, z, p),
            want,
            "spec rules: ({c}, {s}, {z}, {p:?})"
        );
        assert_eq!(
            checksum(c, s, z, p),
            want,
            "library: ({c}, {s}, {z}, {p:?})"
        );
    }
}

/// (1, 1, 0, empty): header halves 1 + 1 + 0 = 2, no payload, !2 = 65533.
#[test]
fn hand_worked_empty_payload() {
    assert_eq!(0xFFFF - 2, 65533);
    assert_eq!(checksum(1, 1, 0, b""), 65533);
}

#[test]
fn implementations_agree_on_many_inputs() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let (c, s) = (next() as u32, next() >> (next() % 64));
        let len = (next() % 40) as usize;
        let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let size = len as u64;
        assert_eq!(
            checksum(c, s, size, &payload),
            spec_checksum(u64::from(c), s, size, &payload)
        );
    }
}

fn encode(msg: &Message<'_>) -> String {
    let mut buf = Vec::new();
    msg.encode(&mut buf);
    String::from_utf8(buf).unwrap()
}

#[test]
fn json_for_each_message_type() {
    let cases = [
        (
            Message::connect(42),
            r#"{"Type":0,"ConnID":0,"SeqNum":42,"Size":0,"Checksum":0,"Payload":null}"#,
        ),
        (
            Message::data(1, 1001, b"hello"),
            r#"{"Type":1,"ConnID":1,"SeqNum":1001,"Size":5,"Checksum":10701,"Payload":"aGVsbG8="}"#,
        ),
        (
            Message::ack(1, 1001),
            r#"{"Type":2,"ConnID":1,"SeqNum":1001,"Size":0,"Checksum":0,"Payload":null}"#,
        ),
        (
            Message::ack(5, 0),
            r#"{"Type":2,"ConnID":5,"SeqNum":0,"Size":0,"Checksum":0,"Payload":null}"#,
        ),
        (
            Message::cack(1, 1005),
            r#"{"Type":3,"ConnID":1,"SeqNum":1005,"Size":0,"Checksum":0,"Payload":null}"#,
        ),
        (
            Message::data(7, 3, b"third"),
            r#"{"Type":1,"ConnID":7,"SeqNum":3,"Size":5,"Checksum":9391,"Payload":"dGhpcmQ="}"#,
        ),
    ];
    for (msg, json) in cases {
        assert_eq!(encode(&msg), json);
        assert_eq!(Message::decode(json.as_bytes()).unwrap(), msg);
    }
}

#[test]
fn decoding_accepts_go_variations() {
    // Keys in any order, unknown keys, and an empty payload as "".
    let m = Message::decode(
        br#"{"Checksum":65533,"Payload":"","Type":1,"Size":0,"SeqNum":1,"ConnID":1,"X":{}}"#,
    )
    .unwrap();
    assert_eq!(
        (m.kind, m.conn_id, m.seq_num, m.payload.len()),
        (MsgType::Data, 1, 1, 0)
    );
    // Sequence numbers beyond 32 bits (Go's int is 64-bit).
    let m = Message::decode(
        br#"{"Type":2,"ConnID":1,"SeqNum":4294967296,"Size":0,"Checksum":0,"Payload":null}"#,
    )
    .unwrap();
    assert_eq!(m.seq_num, 1 << 32);
}
