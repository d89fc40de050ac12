//! The three messages of the mining protocol and their JSON form.
//!
//! On the wire each message is what Go's `encoding/json` makes of the
//! course's `Message` struct: an object with the keys `Type` (0 Join,
//! 1 Request, 2 Result), `Data`, `Lower`, `Upper`, `Hash` and `Nonce`, all
//! present, the unused ones zero. Decoding is as lenient as Go's: missing
//! keys are zero, unknown keys are ignored. In Rust the message is an enum,
//! so a Join can never carry a range nor a Result a string.

use serde::{Deserialize, Serialize};

/// One message between a client or miner and the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Wire", try_from = "Wire")]
pub enum Message {
    /// Miner to server: "I can take work".
    Join,
    /// Client to server ("mine this"), and server to miner ("mine this
    /// chunk"): the nonces `lower..=upper` of `data`.
    Request {
        data: String,
        lower: u64,
        upper: u64,
    },
    /// Miner to server (a chunk's answer) and server to client (the whole
    /// request's answer): the least hash and the nonce that gave it.
    Result { hash: u64, nonce: u64 },
}

/// Why a payload is not a mining message.
#[derive(Debug)]
pub struct DecodeError(String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a mining message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    /// The JSON bytes of one LSP payload.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of integers and a string into memory cannot fail.
        serde_json::to_vec(self).expect("a Message always serializes")
    }

    /// Parses one LSP payload.
    pub fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
        serde_json::from_slice(payload).map_err(|err| DecodeError(err.to_string()))
    }
}

impl std::fmt::Display for Message {
    /// The course's notation, handy in logs: `[Request msg 0 9999]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Join => write!(f, "[Join]"),
            Message::Request { data, lower, upper } => {
                write!(f, "[Request {data} {lower} {upper}]")
            }
            Message::Result { hash, nonce } => write!(f, "[Result {hash} {nonce}]"),
        }
    }
}

/// The flat struct Go sends, field for field and in Go's order.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Wire {
    #[serde(rename = "Type")]
    kind: u8,
    data: String,
    lower: u64,
    upper: u64,
    hash: u64,
    nonce: u64,
}

const JOIN: u8 = 0;
const REQUEST: u8 = 1;
const RESULT: u8 = 2;

impl From<Message> for Wire {
    fn from(msg: Message) -> Wire {
        match msg {
            Message::Join => Wire {
                kind: JOIN,
                ..Wire::default()
            },
            Message::Request { data, lower, upper } => Wire {
                kind: REQUEST,
                data,
                lower,
                upper,
                ..Wire::default()
            },
            Message::Result { hash, nonce } => Wire {
                kind: RESULT,
                hash,
                nonce,
                ..Wire::default()
            },
        }
    }
}

impl TryFrom<Wire> for Message {
    type Error = String;

    fn try_from(wire: Wire) -> Result<Message, String> {
        match wire.kind {
            JOIN => Ok(Message::Join),
            REQUEST => Ok(Message::Request {
                data: wire.data,
                lower: wire.lower,
                upper: wire.upper,
            }),
            RESULT => Ok(Message::Result {
                hash: wire.hash,
                nonce: wire.nonce,
            }),
            other => Err(format!("unknown message type {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_go() {
        // What encoding/json makes of bitcoin.NewRequest("msg", 0, 9999) and friends.
        let cases = [
            (
                Message::Join,
                r#"{"Type":0,"Data":"","Lower":0,"Upper":0,"Hash":0,"Nonce":0}"#,
            ),
            (
                Message::Request {
                    data: "msg".into(),
                    lower: 0,
                    upper: 9999,
                },
                r#"{"Type":1,"Data":"msg","Lower":0,"Upper":9999,"Hash":0,"Nonce":0}"#,
            ),
            (
                Message::Result {
                    hash: u64::MAX,
                    nonce: 7,
                },
                r#"{"Type":2,"Data":"","Lower":0,"Upper":0,"Hash":18446744073709551615,"Nonce":7}"#,
            ),
        ];
        for (msg, json) in cases {
            assert_eq!(String::from_utf8(msg.encode()).unwrap(), json);
            assert_eq!(Message::decode(json.as_bytes()).unwrap(), msg);
        }
    }

    #[test]
    fn decodes_leniently_like_go() {
        // A Go miner may echo the chunk's bounds in its Result; keys may be missing.
        let result = br#"{"Type":2,"Lower":5,"Upper":9,"Hash":3,"Nonce":6,"Extra":true}"#;
        assert_eq!(
            Message::decode(result).unwrap(),
            Message::Result { hash: 3, nonce: 6 }
        );
        assert_eq!(Message::decode(br#"{"Type":0}"#).unwrap(), Message::Join);
        assert_eq!(Message::decode(b"{}").unwrap(), Message::Join);
    }

    #[test]
    fn rejects_what_is_not_a_message() {
        for junk in [
            &br#"{"Type":3}"#[..],
            br#"{"Type":-1}"#,
            br#"{"Type":1,"Lower":-4}"#,
            b"[1,2]",
            b"",
            b"\xff",
        ] {
            assert!(Message::decode(junk).is_err(), "{junk:?}");
        }
    }
}
