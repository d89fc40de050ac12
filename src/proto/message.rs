//! LSP messages and their JSON encoding, byte-compatible with Go's `encoding/json`.
//!
//! The encoder is hand-written (it is on every send path and writes into a
//! reused buffer); the decoder uses serde and borrows from the datagram, so an
//! Ack or a heartbeat is decoded without allocating.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;

use super::checksum::checksum;
use super::conn::MAX_SEQ_NUM;

/// Largest UDP payload over IPv4; larger datagrams cannot exist.
pub const MAX_DATAGRAM: usize = 65507;

/// Default maximum size of a datagram we send: one packet on a 1500-byte Ethernet MTU.
pub const DEFAULT_MAX_DATAGRAM: usize = 1472;

/// Bytes of JSON around the base64 payload of a Data message in the worst case:
/// the fixed keys and punctuation (63) plus the widest ConnID (10 digits),
/// SeqNum (20), Size (5) and Checksum (5).
const DATA_OVERHEAD: usize = 63 + 10 + 20 + 5 + 5;

/// The largest payload whose Data message fits in `max_datagram` bytes.
///
/// # Examples
///
/// ```
/// assert_eq!(liveseq::proto::max_payload(1472), 1026);
/// ```
pub fn max_payload(max_datagram: usize) -> usize {
    max_datagram.saturating_sub(DATA_OVERHEAD) / 4 * 3
}

/// The four message types of LSP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// `(Connect, 0, isn)`: a client asks for a connection.
    Connect = 0,
    /// A payload with its sequence number.
    Data = 1,
    /// Acknowledges one sequence number; `SeqNum` 0 is a heartbeat.
    Ack = 2,
    /// Cumulative ack: everything up to and including `SeqNum`.
    CAck = 3,
}

/// One LSP message, as carried by one datagram.
///
/// The payload borrows where it can (messages built for sending borrow the
/// queued payload), so encoding a retransmission copies nothing.
///
/// # Examples
///
/// ```
/// use liveseq::proto::Message;
///
/// let msg = Message::data(1, 1001, b"hello");
/// let mut buf = Vec::new();
/// msg.encode(&mut buf);
/// assert_eq!(
///     std::str::from_utf8(&buf).unwrap(),
///     r#"{"Type":1,"ConnID":1,"SeqNum":1001,"Size":5,"Checksum":10701,"Payload":"aGVsbG8="}"#
/// );
/// assert_eq!(Message::decode(&buf).unwrap(), msg);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Message type.
    pub kind: MsgType,
    /// Connection id (0 in Connect).
    pub conn_id: u32,
    /// Sequence number (isn in Connect and its Ack, 0 in a heartbeat).
    pub seq_num: u64,
    /// Payload length claimed by the sender (Data only).
    pub size: u64,
    /// Checksum claimed by the sender (Data only).
    pub checksum: u16,
    /// Payload bytes (empty for everything but Data).
    pub payload: Cow<'a, [u8]>,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({}, {}", self.kind, self.conn_id, self.seq_num)?;
        if self.kind == MsgType::Data {
            write!(
                f,
                ", size {}, checksum {}, {} bytes",
                self.size,
                self.checksum,
                self.payload.len()
            )?;
        }
        f.write_str(")")
    }
}

/// Why a datagram was not a message.
///
/// # Examples
///
/// ```
/// use liveseq::proto::{DecodeError, Message};
///
/// let err = Message::decode(br#"{"Type":9,"ConnID":1,"SeqNum":1}"#).unwrap_err();
/// assert_eq!(err, DecodeError::UnknownType);
/// assert_eq!(err.to_string(), "unknown message type");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape or with out-of-range numbers.
    Malformed,
    /// A `Type` other than 0 to 3.
    UnknownType,
    /// The payload is not valid standard base64.
    BadBase64,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Malformed => "malformed message",
            DecodeError::UnknownType => "unknown message type",
            DecodeError::BadBase64 => "payload is not valid base64",
        })
    }
}

impl std::error::Error for DecodeError {}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "Type")]
    kind: u8,
    #[serde(rename = "ConnID")]
    conn_id: u32,
    #[serde(rename = "SeqNum")]
    seq_num: u64,
    #[serde(rename = "Size", default)]
    size: u64,
    #[serde(rename = "Checksum", default)]
    checksum: u16,
    #[serde(rename = "Payload", default, borrow)]
    payload: Option<Cow<'a, str>>,
}

impl<'a> Message<'a> {
    /// `(Connect, 0, isn)`.
    pub fn connect(isn: u64) -> Message<'static> {
        Message::control(MsgType::Connect, 0, isn)
    }

    /// `(Ack, conn_id, seq_num)`; a `seq_num` of 0 is a heartbeat.
    pub fn ack(conn_id: u32, seq_num: u64) -> Message<'static> {
        Message::control(MsgType::Ack, conn_id, seq_num)
    }

    /// `(CAck, conn_id, seq_num)`: acknowledges everything up to `seq_num`.
    pub fn cack(conn_id: u32, seq_num: u64) -> Message<'static> {
        Message::control(MsgType::CAck, conn_id, seq_num)
    }

    fn control(kind: MsgType, conn_id: u32, seq_num: u64) -> Message<'static> {
        Message {
            kind,
            conn_id,
            seq_num,
            size: 0,
            checksum: 0,
            payload: Cow::Borrowed(&[]),
        }
    }

    /// A Data message with its `Size` and `Checksum` filled in.
    pub fn data(conn_id: u32, seq_num: u64, payload: &'a [u8]) -> Message<'a> {
        let size = payload.len() as u64;
        Message {
            kind: MsgType::Data,
            conn_id,
            seq_num,
            size,
            checksum: checksum(conn_id, seq_num, size, payload),
            payload: Cow::Borrowed(payload),
        }
    }

    /// Appends the JSON encoding to `buf`, exactly as Go's `encoding/json` would
    /// write the reference `Message` struct (`Payload` is `null` except in Data).
    pub fn encode(&self, buf: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(
            buf,
            r#"{{"Type":{},"ConnID":{},"SeqNum":{},"Size":{},"Checksum":{},"Payload":"#,
            self.kind as u8, self.conn_id, self.seq_num, self.size, self.checksum
        );
        if self.kind == MsgType::Data {
            buf.push(b'"');
            let start = buf.len();
            buf.resize(start + base64_len(self.payload.len()), 0);
            // The buffer was sized for exactly this output.
            let _ = BASE64.encode_slice(&self.payload, &mut buf[start..]);
            buf.extend_from_slice(b"\"}");
        } else {
            buf.extend_from_slice(b"null}");
        }
    }

    /// The length of what [`encode`](Self::encode) writes, without writing it.
    ///
    /// # Examples
    ///
    /// ```
    /// use liveseq::proto::Message;
    ///
    /// let msg = Message::data(1, 1001, b"hello");
    /// let mut buf = Vec::new();
    /// msg.encode(&mut buf);
    /// assert_eq!(msg.encoded_len(), buf.len());
    /// ```
    pub fn encoded_len(&self) -> usize {
        fn digits(n: u64) -> usize {
            n.checked_ilog10().map_or(1, |d| d as usize + 1)
        }
        const FIXED: usize =
            r#"{"Type":,"ConnID":,"SeqNum":,"Size":,"Checksum":,"Payload":}"#.len();
        let numbers = digits(self.kind as u64)
            + digits(self.conn_id.into())
            + digits(self.seq_num)
            + digits(self.size)
            + digits(self.checksum.into());
        let payload = if self.kind == MsgType::Data {
            base64_len(self.payload.len()) + 2
        } else {
            "null".len()
        };
        FIXED + numbers + payload
    }

    /// Decodes one datagram. Keys may come in any order, unknown keys are
    /// ignored, and `Size`, `Checksum` and `Payload` may be missing. `SeqNum`
    /// and `Size` above [`MAX_SEQ_NUM`](super::MAX_SEQ_NUM) (2^63-1, Go's
    /// largest `int`) and a `ConnID` above `u32::MAX` are malformed.
    pub fn decode(datagram: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let wire: Wire<'a> =
            serde_json::from_slice(datagram).map_err(|_| DecodeError::Malformed)?;
        // Go peers decode these into a Go `int`: larger values are malformed
        // to them, and no sequence arithmetic of ours has to consider them.
        if wire.seq_num > MAX_SEQ_NUM || wire.size > MAX_SEQ_NUM {
            return Err(DecodeError::Malformed);
        }
        let kind = match wire.kind {
            0 => MsgType::Connect,
            1 => MsgType::Data,
            2 => MsgType::Ack,
            3 => MsgType::CAck,
            _ => return Err(DecodeError::UnknownType),
        };
        // Only Data carries a payload; anywhere else it is ignored unread, so a
        // control message can neither smuggle bytes nor cost a base64 decode.
        let payload = match wire.payload {
            Some(text) if kind == MsgType::Data && !text.is_empty() => Cow::Owned(
                BASE64
                    .decode(text.as_bytes())
                    .map_err(|_| DecodeError::BadBase64)?,
            ),
            _ => Cow::Borrowed(&[][..]),
        };
        Ok(Message {
            kind,
            conn_id: wire.conn_id,
            seq_num: wire.seq_num,
            size: wire.size,
            checksum: wire.checksum,
            payload,
        })
    }

    /// Applies the integrity rules to a received Data message: a payload
    /// shorter than `Size` fails, a longer one is cut to `Size`, then the
    /// checksum must match. Returns whether the message may be used.
    pub fn verify_data(&mut self) -> bool {
        let size = match usize::try_from(self.size) {
            Ok(size) if size <= self.payload.len() => size,
            _ => return false,
        };
        if size < self.payload.len() {
            match &mut self.payload {
                Cow::Owned(v) => v.truncate(size),
                Cow::Borrowed(b) => *b = &b[..size],
            }
        }
        checksum(self.conn_id, self.seq_num, self.size, &self.payload) == self.checksum
    }

    /// The same message owning its payload.
    pub fn into_owned(self) -> Message<'static> {
        Message {
            payload: Cow::Owned(self.payload.into_owned()),
            ..self
        }
    }
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Logs a datagram that was not a message, at debug level, with its start.
pub(crate) fn log_malformed(from: std::net::SocketAddr, err: DecodeError, datagram: &[u8]) {
    if log::log_enabled!(log::Level::Debug) {
        let shown = &datagram[..datagram.len().min(80)];
        log::debug!(
            "dropped a malformed datagram from {from} ({err}): {:?}",
            String::from_utf8_lossy(shown)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(msg: &Message<'_>) -> String {
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn encoded_len_is_the_length_encode_writes() {
        let big = vec![7u8; 1000];
        for msg in [
            Message::connect(0),
            Message::connect(super::super::MAX_ISN),
            Message::ack(0, 0),
            Message::ack(u32::MAX, u64::MAX),
            Message::cack(9, 10),
            Message::data(1, 1, b""),
            Message::data(12345, 999, b"ab"),
            Message::data(u32::MAX, u64::MAX, &big),
        ] {
            let mut buf = Vec::new();
            msg.encode(&mut buf);
            assert_eq!(msg.encoded_len(), buf.len(), "{msg:?}");
        }
    }

    #[test]
    fn encodes_every_type_like_go() {
        assert_eq!(
            text(&Message::connect(0)),
            r#"{"Type":0,"ConnID":0,"SeqNum":0,"Size":0,"Checksum":0,"Payload":null}"#
        );
        assert_eq!(
            text(&Message::ack(7, 42)),
            r#"{"Type":2,"ConnID":7,"SeqNum":42,"Size":0,"Checksum":0,"Payload":null}"#
        );
        assert_eq!(
            text(&Message::cack(7, 43)),
            r#"{"Type":3,"ConnID":7,"SeqNum":43,"Size":0,"Checksum":0,"Payload":null}"#
        );
        assert_eq!(
            text(&Message::data(1, 1001, b"hello")),
            r#"{"Type":1,"ConnID":1,"SeqNum":1001,"Size":5,"Checksum":10701,"Payload":"aGVsbG8="}"#
        );
        assert_eq!(
            text(&Message::data(1, 1, b"")),
            r#"{"Type":1,"ConnID":1,"SeqNum":1,"Size":0,"Checksum":65533,"Payload":""}"#
        );
    }

    #[test]
    fn decodes_any_key_order_unknown_keys_and_missing_optionals() {
        let m = Message::decode(br#"{"Payload":"aGVsbG8=","Checksum":10701,"Extra":[1,{}],"Size":5,"SeqNum":1001,"ConnID":1,"Type":1}"#)
            .unwrap();
        assert_eq!(m, Message::data(1, 1001, b"hello"));
        let m = Message::decode(br#"{"Type":2,"ConnID":3,"SeqNum":0}"#).unwrap();
        assert_eq!(m, Message::ack(3, 0));
        let m = Message::decode(
            br#"{"Type":1,"ConnID":1,"SeqNum":1,"Size":0,"Checksum":65533,"Payload":""}"#,
        )
        .unwrap();
        assert!(m.payload.is_empty());
    }

    #[test]
    fn rejects_bad_datagrams() {
        let bad: &[&[u8]] = &[
            b"",
            b"{",
            b"[]",
            b"null",
            br#"{"Type":1}"#,
            br#"{"Type":-1,"ConnID":1,"SeqNum":1}"#,
            br#"{"Type":2,"ConnID":-1,"SeqNum":1}"#,
            br#"{"Type":2,"ConnID":4294967296,"SeqNum":1}"#,
            br#"{"Type":2,"ConnID":1,"SeqNum":1.5}"#,
            br#"{"Type":1,"ConnID":1,"SeqNum":1,"Checksum":65536}"#,
            br#"{"Type":"1","ConnID":1,"SeqNum":1}"#,
        ];
        for d in bad {
            assert_eq!(
                Message::decode(d),
                Err(DecodeError::Malformed),
                "{}",
                String::from_utf8_lossy(d)
            );
        }
        assert_eq!(
            Message::decode(br#"{"Type":4,"ConnID":1,"SeqNum":1}"#),
            Err(DecodeError::UnknownType)
        );
        assert_eq!(
            Message::decode(br#"{"Type":1,"ConnID":1,"SeqNum":1,"Size":1,"Payload":"!!"}"#),
            Err(DecodeError::BadBase64)
        );
    }

    /// Found by fuzzing: a payload on a non-Data message is ignored, so what
    /// decodes re-encodes to the same message.
    #[test]
    fn payload_outside_data_is_ignored() {
        let m = Message::decode(
            br#"{"Type":0,"ConnID":1,"SeqNum":1001,"Size":2,"Payload":"aGVsbG8="}"#,
        )
        .unwrap();
        assert!(m.payload.is_empty());
        let m =
            Message::decode(br#"{"Type":2,"ConnID":1,"SeqNum":3,"Payload":"not base64 at all"}"#)
                .unwrap();
        assert_eq!(
            m,
            Message {
                size: 0,
                ..Message::ack(1, 3)
            }
        );
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(Message::decode(&buf).unwrap(), m);
    }

    #[test]
    fn integrity_rules() {
        let good = Message::data(4, 9, b"payload");
        let mut m = good.clone();
        assert!(m.verify_data());

        let mut longer = good.clone();
        longer.payload = Cow::Owned(b"payload+extra".to_vec());
        assert!(longer.verify_data());
        assert_eq!(&*longer.payload, b"payload");

        let mut shorter = good.clone();
        shorter.payload = Cow::Owned(b"paylo".to_vec());
        assert!(!shorter.verify_data());

        let mut corrupt = good.clone();
        corrupt.payload = Cow::Owned(b"Payload".to_vec());
        assert!(!corrupt.verify_data());

        // A huge Size with a short payload is refused without allocating Size bytes.
        let mut huge = good;
        huge.size = 1 << 31;
        assert!(!huge.verify_data());
    }

    #[test]
    fn max_payload_fits_in_the_datagram() {
        for max in [200, 1472, 9000, MAX_DATAGRAM] {
            let payload = vec![0xAB; max_payload(max)];
            let msg = Message {
                conn_id: u32::MAX,
                seq_num: u64::MAX,
                ..Message::data(1, 1, &payload)
            };
            let mut buf = Vec::new();
            msg.encode(&mut buf);
            assert!(buf.len() <= max, "{} > {max}", buf.len());
            assert!(max - buf.len() < 4 + 35, "wasted {} bytes", max - buf.len());
        }
    }
}
