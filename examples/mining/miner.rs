//! The miner: joins, then answers each chunk it is given with the least
//! hash in it, one chunk at a time, until the server is gone.

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use liveseq::{Client, ConnId, Error, Params};

use super::hash::min_hash;
use super::message::Message;

/// What a miner tells whoever watches it (the demo's progress line, tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Started hashing `lower..=upper` of `data`.
    Started {
        data: String,
        lower: u64,
        upper: u64,
    },
    /// Sent the least `(hash, nonce)` of `lower..=upper`.
    Done {
        lower: u64,
        upper: u64,
        hash: u64,
        nonce: u64,
    },
}

/// Why [`Miner::run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The connection to the server was lost (the course's miner then shuts down).
    ServerLost,
    /// [`Killer::kill`] was called.
    Killed,
}

/// A miner that has joined a server.
pub struct Miner {
    client: Arc<Client>,
    killed: Arc<AtomicBool>,
}

/// Stops a running miner the way a crash would: at once, mid-chunk, without
/// a word to the server, which notices only by the silence.
#[derive(Clone)]
pub struct Killer {
    client: Arc<Client>,
    killed: Arc<AtomicBool>,
}

impl Killer {
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        // Discard whatever is unsent and stop the protocol threads now: a
        // draining close would keep answering the server for a while.
        let _ = self.client.close_timeout(Duration::ZERO);
    }
}

impl Miner {
    /// Connects to the server and sends `Join`.
    pub fn join(addr: impl ToSocketAddrs, params: Params) -> Result<Miner, Error> {
        let client = Client::connect(addr, params)?;
        client.write(&Message::Join.encode())?;
        Ok(Miner {
            client: Arc::new(client),
            killed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn conn_id(&self) -> ConnId {
        self.client.conn_id()
    }

    pub fn killer(&self) -> Killer {
        Killer {
            client: self.client.clone(),
            killed: self.killed.clone(),
        }
    }

    /// Answers chunks until the server is lost or the miner is killed,
    /// telling `report` about each one.
    pub fn run(self, mut report: impl FnMut(Report)) -> Exit {
        loop {
            let payload = match self.client.read() {
                Ok(payload) => payload,
                Err(_) if self.killed.load(Ordering::SeqCst) => return Exit::Killed,
                Err(err) => {
                    log::debug!("read: {err}");
                    return Exit::ServerLost;
                }
            };
            let (data, lower, upper) = match Message::decode(&payload) {
                Ok(Message::Request { data, lower, upper }) => (data, lower, upper),
                Ok(other) => {
                    log::warn!("ignoring {other}: a miner only takes requests");
                    continue;
                }
                Err(err) => {
                    log::warn!("ignoring a message: {err}");
                    continue;
                }
            };
            report(Report::Started {
                data: data.clone(),
                lower,
                upper,
            });
            // Hashing happens on this thread while liveseq's own threads keep
            // the connection alive (acknowledgements and heartbeats), so a
            // chunk may take far longer than the epoch limit.
            let Some((hash, nonce)) = min_hash(&data, lower, upper, &self.killed) else {
                if self.killed.load(Ordering::SeqCst) {
                    return Exit::Killed;
                }
                log::warn!("ignoring [Request {data} {lower} {upper}]: empty range");
                continue;
            };
            if let Err(err) = self.client.write(&Message::Result { hash, nonce }.encode()) {
                log::debug!("write: {err}");
                return if self.killed.load(Ordering::SeqCst) {
                    Exit::Killed
                } else {
                    Exit::ServerLost
                };
            }
            report(Report::Done {
                lower,
                upper,
                hash,
                nonce,
            });
        }
    }
}
