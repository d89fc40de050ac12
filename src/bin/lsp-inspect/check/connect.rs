//! Connections and their Connects: what the checker keeps per client
//! address (the ISNs it sent, the ConnIDs the server answered with) and per
//! connection, and the rules on ConnIDs (one address each; a repeated
//! Connect answered anew only once the older connection is gone).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::rules::{Origin, Rule, Seen};
use super::side::{Side, SideState, MAX_SENT};

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

impl Flow {
    /// Notes a Connect the client sent with `isn`.
    pub(super) fn client_connect(&mut self, at: Duration, isn: u64) {
        if !self.isns.contains(&isn) {
            self.isns.push(isn);
        }
        self.last_client_sent = Some(at);
    }

    /// Starts tracking connection `id` on its first datagram.
    pub(super) fn track(&mut self, id: u32, is_connect_ack: bool, connect_isn: Option<u64>) {
        if !self.conns.contains_key(&id) {
            // Which Connect this connection answers: the one whose ISN its
            // first Ack carries, or the only one this address sent. With
            // several and no Ack to tell, the ISN stays unknown and the
            // checks that need it are lenient.
            let isn = if is_connect_ack {
                connect_isn
            } else if self.isns.len() == 1 {
                self.isns.first().copied()
            } else {
                None
            };
            let mut sides: [SideState; 2] = Default::default();
            sides[Side::Server.index()].last_heard = self.last_connect_delivered;
            self.conns.insert(
                id,
                TrackedConn {
                    isn,
                    sides,
                    client_connected: false,
                    server_validated: false,
                },
            );
        }
    }

    /// The rule on repeated Connects, for a datagram the server sent on
    /// connection `id`; an answer to a Connect is remembered.
    pub(super) fn check_answer(
        &mut self,
        o: &Origin,
        id: u32,
        is_connect_ack: bool,
        connect_isn: Option<u64>,
        seen: &mut Seen,
    ) {
        // A repeated Connect answered with another ConnID is a breach only
        // if the older connection provably lived on: the server uses it
        // after giving out the newer one.
        for c in self.contested.iter_mut() {
            if c.older == id && !c.reported && o.at > c.at {
                c.reported = true;
                o.report(
                    seen,
                    Rule::ConnectReanswered,
                    format!(
                        "Connect with ISN {} was answered with ConnID {} (datagram #{}) while connection {} from the same address was still live",
                        c.isn, c.newer, c.datagram, c.older
                    ),
                );
            }
        }
        if let (true, Some(isn)) = (is_connect_ack, connect_isn) {
            let known = self.answers.iter().any(|a| a.isn == isn && a.id == id);
            if !known {
                let older = self.answers.iter().find(|a| a.isn == isn).map(|a| a.id);
                if let Some(older) = older.filter(|_| self.contested.len() < MAX_ANSWERS) {
                    self.contested.push(Contested {
                        older,
                        newer: id,
                        isn,
                        at: o.at,
                        datagram: o.datagram,
                        reported: false,
                    });
                }
                if self.answers.len() < MAX_ANSWERS {
                    self.answers.push(Answer { isn, id });
                }
            }
        }
    }
}

/// The rule that a ConnID belongs to one client address, for a datagram the
/// server sent on connection `id`: `owners` maps each ConnID to the address
/// it was first given to, and `reused` holds the reuses already reported.
pub(super) fn check_owner(
    owners: &mut HashMap<u32, usize>,
    reused: &mut HashSet<(u32, usize)>,
    o: &Origin,
    id: u32,
    seen: &mut Seen,
) {
    match owners.get(&id) {
        Some(&owner) if owner != o.flow => {
            if reused.len() < MAX_SENT && reused.insert((id, o.flow)) {
                o.report(
                    seen,
                    Rule::ConnIdReused,
                    format!("ConnID {id} was already given to another client address"),
                );
            }
        }
        Some(_) => {}
        None => {
            owners.insert(id, o.flow);
        }
    }
}
