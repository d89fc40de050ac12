//! The wire format: checksum vectors and the JSON encoding, byte for byte as
//! the Go reference writes them.
//!
//! The checksum is recomputed here by a second, independent implementation
//! written from the rules in docs/PROTOCOL.md, section 3 (32-bit arithmetic with explicit
//! masking, rather than the library's 16-bit wrapping), and both are checked
//! against the reference table and a vector worked by hand.

use liveseq::proto::{checksum, DecodeError, Message, MsgType};

/// The checksum rules of docs/PROTOCOL.md (section 3), step by step.
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

/// LSP's checksum is a 16-bit one's-complement sum: it cannot see every
/// change. These damaged payloads pass the integrity rules with the original
/// `Size` and `Checksum`, and the receiver would deliver them. That is the
/// protocol's limit (a Go peer computes the same sum), not a bug: an
/// application that needs more puts its own digest in the payload or runs
/// LSP through an authenticated tunnel (see README, security model).
#[test]
fn checksum_cannot_see_every_change() {
    // Words, little-endian: 0x0201, 0x0000, 0x0403, 0x0605.
    let original: &[u8] = &[0x01, 0x02, 0x00, 0x00, 0x03, 0x04, 0x05, 0x06];
    let undetectable: [(&str, &[u8]); 3] = [
        // Addition is commutative: swapping two words changes nothing in the sum.
        (
            "two 16-bit words swapped",
            &[0x03, 0x04, 0x00, 0x00, 0x01, 0x02, 0x05, 0x06],
        ),
        // 0x0000 and 0xFFFF are both zero in one's-complement arithmetic.
        (
            "a word 0x0000 turned into 0xFFFF",
            &[0x01, 0x02, 0xFF, 0xFF, 0x03, 0x04, 0x05, 0x06],
        ),
        // -1 in one word, +1 in another: the sum is unchanged.
        (
            "-1 in one word, +1 in another",
            &[0x00, 0x02, 0x00, 0x00, 0x03, 0x04, 0x06, 0x06],
        ),
    ];
    let sent = Message::data(7, 1234, original);
    for (what, damaged) in undetectable {
        assert_ne!(damaged, original);
        let mut received = Message {
            payload: damaged.to_vec().into(),
            ..sent.clone()
        };
        assert!(received.verify_data(), "{what}: passes the integrity rules");
        assert_eq!(&received.payload[..], damaged, "{what}: delivered as is");
        assert_eq!(
            spec_checksum(7, 1234, 8, damaged),
            sent.checksum,
            "{what}: the same sum by the protocol's rules"
        );
    }
    // A single flipped bit, by contrast, is always caught.
    for bit in 0..original.len() * 8 {
        let mut damaged = original.to_vec();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let mut received = Message {
            payload: damaged.into(),
            ..sent.clone()
        };
        assert!(!received.verify_data(), "bit {bit} flipped");
    }
}

/// Decodes a Data message with these numbers as written in the JSON.
fn decode_data(conn_id: &str, seq_num: &str, size: &str) -> Result<Message<'static>, DecodeError> {
    let json = format!(
        r#"{{"Type":1,"ConnID":{conn_id},"SeqNum":{seq_num},"Size":{size},"Checksum":0,"Payload":""}}"#
    );
    Message::decode(json.as_bytes()).map(Message::into_owned)
}

/// Numbers at the edges. Go peers decode SeqNum and Size into a Go `int`
/// (64-bit, signed), so values above 2^63-1 are malformed; ConnID is 32-bit.
#[test]
fn edge_values_decode_or_are_malformed() {
    const TWO_63: u64 = 1 << 63;
    let in_range = [
        0,
        1,
        u64::from(u32::MAX),
        1 << 32,
        TWO_63 - 2,
        TWO_63 - 1, // i64::MAX
    ];
    let out_of_range = [TWO_63, TWO_63 + 1, u64::MAX - 1, u64::MAX];
    for v in in_range {
        let m =
            decode_data("1", &v.to_string(), "0").unwrap_or_else(|e| panic!("SeqNum {v}: {e:?}"));
        assert_eq!(m.seq_num, v);
        let m = decode_data("1", "1", &v.to_string()).unwrap_or_else(|e| panic!("Size {v}: {e:?}"));
        assert_eq!(m.size, v);
        for kind in 0..4 {
            let json = format!(r#"{{"Type":{kind},"ConnID":1,"SeqNum":{v}}}"#);
            assert_eq!(Message::decode(json.as_bytes()).unwrap().seq_num, v);
        }
        // What decodes re-encodes to the same message.
        let msg = Message {
            size: v,
            ..Message::ack(1, v)
        };
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        assert_eq!(Message::decode(&buf).unwrap(), msg);
    }
    for v in out_of_range.iter().map(u64::to_string).chain([
        "18446744073709551616".to_string(), // 2^64
        "-1".to_string(),
        "-9223372036854775808".to_string(), // i64::MIN
    ]) {
        assert_eq!(
            decode_data("1", &v, "0"),
            Err(DecodeError::Malformed),
            "SeqNum {v}"
        );
        assert_eq!(
            decode_data("1", "1", &v),
            Err(DecodeError::Malformed),
            "Size {v}"
        );
        for kind in 0..4 {
            let json = format!(r#"{{"Type":{kind},"ConnID":1,"SeqNum":{v}}}"#);
            assert_eq!(
                Message::decode(json.as_bytes()),
                Err(DecodeError::Malformed),
                "Type {kind} SeqNum {v}"
            );
        }
    }
    // ConnID: any u32 decodes, 2^32 and beyond are malformed.
    for v in [0, 1, u32::MAX - 1, u32::MAX] {
        let m = decode_data(&v.to_string(), "1", "0").unwrap();
        assert_eq!(m.conn_id, v);
    }
    for v in [
        "4294967296",
        "4294967297",
        "9223372036854775807",
        "18446744073709551615",
        "-1",
    ] {
        assert_eq!(
            decode_data(v, "1", "0"),
            Err(DecodeError::Malformed),
            "ConnID {v}"
        );
    }
}

/// The checksum takes each header value as an unsigned 32-bit integer, so
/// sequence numbers 2^32 apart share a checksum (as in the Go reference).
#[test]
fn checksum_of_edge_header_values() {
    for (c, s, z) in [
        (u32::MAX, i64::MAX as u64, 0u64),
        (u32::MAX, u64::from(u32::MAX), u64::from(u32::MAX)),
        (1, 1 << 32, 1 << 32),
    ] {
        let payload = b"edge";
        assert_eq!(
            checksum(c, s, z, payload),
            spec_checksum(u64::from(c), s, z, payload)
        );
        assert_eq!(
            checksum(c, s, z, payload),
            checksum(c, s & 0xFFFF_FFFF, z & 0xFFFF_FFFF, payload)
        );
    }
}
