//! The request client: one request, one answer.

use std::net::ToSocketAddrs;

use liveseq::{Client, Params};

use super::message::Message;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server's answer: the least hash over the whole range and its nonce.
    Answer { hash: u64, nonce: u64 },
    /// The connection was lost (or never made) before an answer came.
    Disconnected,
}

impl std::fmt::Display for Outcome {
    /// Exactly what the course's client prints, which its tests compare.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Answer { hash, nonce } => write!(f, "Result {hash} {nonce}"),
            Outcome::Disconnected => write!(f, "Disconnected"),
        }
    }
}

/// Asks the server at `addr` for the least hash of `data` over the nonces
/// `0..=max_nonce`, and waits for the answer as long as the connection lives.
pub fn request(addr: impl ToSocketAddrs, params: Params, data: &str, max_nonce: u64) -> Outcome {
    let client = match Client::connect(addr, params) {
        Ok(client) => client,
        Err(err) => {
            log::warn!("cannot connect: {err}");
            return Outcome::Disconnected;
        }
    };
    let outcome = exchange(&client, data, max_nonce);
    // The answer is in hand; closing only lets our last acknowledgement out.
    // A server gone by now changes nothing for the caller.
    if let Err(err) = client.close() {
        log::debug!("close: {err}");
    }
    outcome
}

fn exchange(client: &Client, data: &str, max_nonce: u64) -> Outcome {
    let ask = Message::Request {
        data: data.to_string(),
        lower: 0,
        upper: max_nonce,
    };
    if let Err(err) = client.write(&ask.encode()) {
        log::warn!("cannot send the request: {err}");
        return Outcome::Disconnected;
    }
    loop {
        let payload = match client.read() {
            Ok(payload) => payload,
            Err(err) => {
                log::debug!("read: {err}");
                return Outcome::Disconnected;
            }
        };
        match Message::decode(&payload) {
            Ok(Message::Result { hash, nonce }) => return Outcome::Answer { hash, nonce },
            // Only a Result answers a request; anything else is the server's
            // mistake, not a reason to give up on the answer.
            Ok(other) => log::warn!("ignoring {other} from the server"),
            Err(err) => log::warn!("ignoring a message from the server: {err}"),
        }
    }
}
