//! Connections and their Connects: what the checker keeps per client
//! address (the ISNs it sent, the ConnIDs the server answered with) and per
//! connection.

use std::collections::HashMap;
use std::time::Duration;

use super::side::SideState;

/// One connection (one ConnID on one client address).
#[derive(Debug)]
pub(super) struct TrackedConn {
    /// The client's ISN, when it is known for sure.
    pub(super) isn: Option<u64>,
    pub(super) sides: [SideState; 2],
    /// Something of this connection reached the client (it knows its id).
    pub(super) client_connected: bool,
    /// Something other than a Connect reached the server from the client.
    pub(super) server_validated: bool,
}

/// A ConnID the server gave in answer to a Connect.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) isn: u64,
    pub(super) id: u32,
}

/// A repeated Connect answered with `newer` although `older` answered the same ISN before.
#[derive(Debug)]
pub(super) struct Contested {
    pub(super) older: u32,
    pub(super) newer: u32,
    pub(super) isn: u64,
    pub(super) at: Duration,
    pub(super) datagram: usize,
    pub(super) reported: bool,
}

/// Everything known about one client address.
#[derive(Debug, Default)]
pub(super) struct Flow {
    /// Distinct ISNs of the client's Connects, in order.
    pub(super) isns: Vec<u64>,
    pub(super) last_client_sent: Option<Duration>,
    pub(super) last_connect_delivered: Option<Duration>,
    pub(super) conns: HashMap<u32, TrackedConn>,
    pub(super) answers: Vec<Answer>,
    pub(super) contested: Vec<Contested>,
}

/// Connect answers (and contested ones) remembered per client address.
pub(super) const MAX_ANSWERS: usize = 256;
