//! Connections and their Connects: what the checker keeps per client
//! address (the ISNs it sent, the ConnIDs the server answered with) and per
//! connection, and the rules on ConnIDs (one address each; a repeated
//! Connect answered anew only once the older connection is gone).

use std::collections::HashMap;
use std::time::Duration;

use super::age::AgeMap;
use super::rules::{Origin, Rule, Seen};
use super::side::{Side, SideState, COST_CONN, COST_ENTRY};

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

/// Everything known about one client address. Each of its tables is
/// bounded ([`MAX_CONNS_PER_FLOW`], [`MAX_ISNS`], [`MAX_ANSWERS`]) and
/// forgets its least recently active entry to make room.
#[derive(Debug)]
pub(super) struct Flow {
    /// Distinct ISNs of the client's Connects, the latest kept.
    pub(super) isns: AgeMap<u64, ()>,
    /// How many distinct ISNs it sent (more when forgotten ones come again).
    pub(super) isn_count: u64,
    pub(super) last_client_sent: Option<Duration>,
    pub(super) last_connect_delivered: Option<Duration>,
    /// Its connections (their age is kept in [`super::Checker`]'s
    /// connection table, which bounds them all together).
    pub(super) conns: HashMap<u32, TrackedConn>,
    /// The ConnID the server first gave in answer to each ISN.
    pub(super) first_answer: AgeMap<u64, u32>,
    /// Every (ISN, ConnID) answer seen.
    pub(super) answers: AgeMap<(u64, u32), ()>,
    /// Contested answers, by the older ConnID.
    pub(super) contested: AgeMap<u32, Vec<Contested>>,
    /// Something of this address was forgotten: connections tracked from
    /// now on may have a history the checker never saw, and are judged
    /// leniently (no ISN, no proof that an Ack's Data was never sent).
    pub(super) forgot: bool,
    /// What the accounting charged for it when last weighed.
    pub(super) cost: usize,
}

/// Connections kept per client address.
pub const MAX_CONNS_PER_FLOW: usize = 16;

/// Distinct ISNs kept per client address.
pub const MAX_ISNS: usize = 16;

/// Connect answers (and older ConnIDs with contested answers) remembered per
/// client address.
pub const MAX_ANSWERS: usize = 64;

/// Contested answers kept per older ConnID.
const MAX_CONTESTS: usize = 4;

/// What the accounting charges for a client address, and for each entry of
/// its ISN and answer tables.
const COST_FLOW: usize = 2048;

impl Flow {
    pub(super) fn new(forgot: bool) -> Flow {
        Flow {
            isns: AgeMap::new(MAX_ISNS),
            isn_count: 0,
            last_client_sent: None,
            last_connect_delivered: None,
            conns: HashMap::new(),
            first_answer: AgeMap::new(MAX_ANSWERS),
            answers: AgeMap::new(MAX_ANSWERS),
            contested: AgeMap::new(MAX_ANSWERS),
            forgot,
            cost: 0,
        }
    }

    /// What the accounting charges for it now: O(its connections).
    pub(super) fn cost_now(&self) -> usize {
        let conns: usize = self
            .conns
            .values()
            .map(|c| COST_CONN + c.sides[0].cost() + c.sides[1].cost())
            .sum();
        let entries = self.isns.len()
            + self.first_answer.len()
            + self.answers.len()
            + self.contested.len() * MAX_CONTESTS;
        COST_FLOW + conns + entries * COST_ENTRY
    }

    /// Notes a Connect the client sent with `isn`.
    pub(super) fn client_connect(&mut self, at: Duration, isn: u64) {
        if self.isns.touch(&isn).is_none() {
            self.isn_count = self.isn_count.saturating_add(1);
            if self.isns.insert(isn, ()).is_some() {
                self.forgot = true;
            }
        }
        self.last_client_sent = Some(at);
    }

    /// Starts tracking connection `id` on its first datagram; returns
    /// whether it is new.
    pub(super) fn track(
        &mut self,
        id: u32,
        is_connect_ack: bool,
        connect_isn: Option<u64>,
    ) -> bool {
        if self.conns.contains_key(&id) {
            return false;
        }
        // Which Connect this connection answers: the one whose ISN its
        // first Ack carries, or the only one this address sent. With
        // several and no Ack to tell, the ISN stays unknown and the
        // checks that need it are lenient.
        let isn = if is_connect_ack {
            connect_isn
        } else if self.isn_count == 1 && !self.forgot {
            self.isns.keys().next().copied()
        } else {
            None
        };
        let mut sides: [SideState; 2] = Default::default();
        sides[Side::Server.index()].last_heard = self.last_connect_delivered;
        for side in &mut sides {
            side.history_lost = self.forgot;
        }
        self.conns.insert(
            id,
            TrackedConn {
                isn,
                sides,
                client_connected: false,
                server_validated: false,
            },
        );
        true
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
        for c in self.contested.get_mut(&id).into_iter().flatten() {
            if !c.reported && o.at > c.at {
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
            if self.answers.touch(&(isn, id)).is_none() {
                let older = self.first_answer.touch(&isn).map(|older| *older);
                // (A forgotten answer may name this very id: no contest.)
                if let Some(older) = older.filter(|&older| older != id) {
                    let contest = Contested {
                        older,
                        newer: id,
                        isn,
                        at: o.at,
                        datagram: o.datagram,
                        reported: false,
                    };
                    match self.contested.touch(&older) {
                        Some(list) if list.len() < MAX_CONTESTS => list.push(contest),
                        Some(_) => {}
                        None => {
                            self.contested.insert(older, vec![contest]);
                        }
                    }
                } else if older.is_none() {
                    self.first_answer.insert(isn, id);
                }
                self.answers.insert((isn, id), ());
            }
        }
    }
}

/// The rule that a ConnID belongs to one client address, for a datagram the
/// server sent on connection `id`: `owners` maps each ConnID to the address
/// it was first given to, and `reused` holds the reuses already reported
/// (both forget their least recently active entries: a forgotten owner can
/// only hide a reuse, and a forgotten report is made again).
pub(super) fn check_owner(
    owners: &mut AgeMap<u32, usize>,
    reused: &mut AgeMap<(u32, usize), ()>,
    o: &Origin,
    id: u32,
    seen: &mut Seen,
) {
    match owners.touch(&id) {
        Some(&mut owner) if owner != o.flow => {
            if reused.touch(&(id, o.flow)).is_none() {
                reused.insert((id, o.flow), ());
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
