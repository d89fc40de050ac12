//! The server's brain, without any I/O: it is told what happened on the
//! network ([`Input`]) and answers what to do about it ([`Action`]), so every
//! policy below is unit-tested without sockets.
//!
//! # Policy
//!
//! Every request is cut into chunks of at most `chunk_size` nonces. A miner
//! holds at most one chunk at a time; whenever one is idle it gets the next
//! chunk of the request with the **earliest deadline**, where a request's
//! deadline is fixed when it arrives:
//!
//! ```text
//! deadline = clock at arrival + number of chunks in the request
//! clock    = chunks handed out so far (by the whole pool)
//! ```
//!
//! The deadline is when the request would be done if it had the pool to
//! itself from the moment it arrived, measured on the pool's own clock (so it
//! does not depend on the number or speed of the miners). Handing out work in
//! that order gives what the course asks of a scheduler:
//!
//! - a small request sent after a large one finishes long before it: its
//!   deadline comes first, so it takes every miner that comes free (shortest
//!   remaining work first, which minimises mean response time);
//! - requests of the same size finish in the order they arrived (their
//!   deadlines are in that order; ties go to the older request);
//! - nobody starves: deadlines never move, and a request is overtaken only
//!   by requests due before it, which must arrive before the clock reaches
//!   its deadline: a finite amount of work however many small requests keep
//!   coming (plain shortest-first would let them starve a large one forever);
//! - no miner is idle while there is work: idle miners are served first come,
//!   first served, and a miner that joins in the middle of a request gets a
//!   chunk at once.
//!
//! Round-robin over pending requests (the other simple fair policy) shares
//! the miners equally instead; it never starves anyone either, but a batch of
//! equal requests then all finish together at the end, which doubles their
//! mean response time.
//!
//! # Failures
//!
//! A miner that is lost gives its unfinished chunk back to its request, at
//! the front of the queue, for the next idle miner (or the next one to join).
//! A client that is lost has its requests cancelled at once; chunks of them
//! still on miners are left to finish (LSP cannot recall a message) and their
//! results are ignored. A connection that breaks the protocol (a Result
//! nobody asked for, a nonce outside its chunk, an empty range, a client
//! that joins as a miner, a message that does not decode) is closed and
//! treated as lost.

use std::collections::{BTreeSet, HashMap, VecDeque};

use liveseq::ConnId;

use super::message::Message;

/// Numbers requests in order of arrival, from 0.
pub type RequestId = u64;

/// Nonces `lower..=upper`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub lower: u64,
    pub upper: u64,
}

/// What happened on the network, already decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The connection sent `Join`: it is a miner.
    Join(ConnId),
    /// The connection sent a `Request`: it is a client.
    Request {
        client: ConnId,
        data: String,
        lower: u64,
        upper: u64,
    },
    /// The connection sent a `Result`.
    Result {
        miner: ConnId,
        hash: u64,
        nonce: u64,
    },
    /// The connection sent something that is not a mining message.
    Invalid { conn: ConnId, why: String },
    /// The connection is gone (lost or closed). Harmless for strangers.
    Gone(ConnId),
}

/// What the server should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `msg` to connection `to`.
    Send { to: ConnId, msg: Message },
    /// Close the connection: it broke the protocol (a [`Note::Rejected`]
    /// says how). The scheduler has already forgotten it.
    Close { conn: ConnId },
    /// Something an operator (or a test) may want to know; no I/O needed.
    Note(Note),
}

/// The scheduler's decisions, for logs, progress displays and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A miner joined the pool.
    Joined { miner: ConnId },
    /// A request was accepted and cut into `chunks` chunks.
    Accepted {
        request: RequestId,
        client: ConnId,
        chunks: u64,
        deadline: u64,
    },
    /// A chunk went to a miner.
    Assigned {
        request: RequestId,
        miner: ConnId,
        chunk: Chunk,
    },
    /// A miner answered its chunk.
    ChunkDone {
        request: RequestId,
        miner: ConnId,
        chunk: Chunk,
    },
    /// A miner answered a chunk of a request that was cancelled meanwhile.
    Stale { request: RequestId, miner: ConnId },
    /// A lost miner's chunk went back to its request.
    Requeued {
        request: RequestId,
        miner: ConnId,
        chunk: Chunk,
    },
    /// A request's answer was sent to its client.
    Answered {
        request: RequestId,
        client: ConnId,
        hash: u64,
        nonce: u64,
    },
    /// A connection broke the protocol and is being closed.
    Rejected { conn: ConnId, why: String },
    /// A lost client's request was dropped with `chunks_left` chunks not done.
    Cancelled {
        request: RequestId,
        client: ConnId,
        chunks_left: u64,
    },
}

/// A request being worked on.
struct Request {
    client: ConnId,
    data: String,
    deadline: u64,
    /// Lower bound of the next chunk never handed out; `None` once the
    /// range is used up. Chunks are made as they are handed out, so a range
    /// of 2^64 nonces costs no memory.
    next: Option<u64>,
    upper: u64,
    /// Chunks of lost miners, handed out before new ones.
    requeued: VecDeque<Chunk>,
    /// Chunks on miners right now.
    in_flight: u64,
    /// Chunks answered.
    done: u64,
    chunks: u64,
    /// Least `(hash, nonce)` so far.
    best: Option<(u64, u64)>,
}

impl Request {
    fn has_chunks_to_hand_out(&self) -> bool {
        self.next.is_some() || !self.requeued.is_empty()
    }

    fn is_finished(&self) -> bool {
        !self.has_chunks_to_hand_out() && self.in_flight == 0
    }

    fn take_chunk(&mut self, size: u64) -> Option<Chunk> {
        if let Some(chunk) = self.requeued.pop_front() {
            return Some(chunk);
        }
        let lower = self.next?;
        let upper = lower.saturating_add(size - 1).min(self.upper);
        self.next = if upper == self.upper {
            None
        } else {
            Some(upper + 1)
        };
        Some(Chunk { lower, upper })
    }
}

/// The scheduler: see the module documentation for its policy.
pub struct Scheduler {
    chunk_size: u64,
    /// Chunks handed out so far: the clock deadlines are measured on.
    clock: u64,
    next_id: RequestId,
    requests: HashMap<RequestId, Request>,
    /// Requests with chunks to hand out, earliest deadline first.
    ready: BTreeSet<(u64, RequestId)>,
    /// Every miner and what it is working on.
    miners: HashMap<ConnId, Option<(RequestId, Chunk)>>,
    /// Miners with nothing to do, longest idle first.
    idle: VecDeque<ConnId>,
    /// Each client's requests in the order sent: answers go back in that order.
    clients: HashMap<ConnId, VecDeque<RequestId>>,
}

impl Scheduler {
    /// A scheduler cutting requests into chunks of `chunk_size` nonces.
    ///
    /// # Panics
    ///
    /// If `chunk_size` is 0.
    pub fn new(chunk_size: u64) -> Scheduler {
        assert!(chunk_size > 0, "chunk size must be at least 1");
        Scheduler {
            chunk_size,
            clock: 0,
            next_id: 0,
            requests: HashMap::new(),
            ready: BTreeSet::new(),
            miners: HashMap::new(),
            idle: VecDeque::new(),
            clients: HashMap::new(),
        }
    }

    /// Takes in one event and returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Join(miner) => self.join(miner, &mut out),
            Input::Request {
                client,
                data,
                lower,
                upper,
            } => self.request(client, data, lower, upper, &mut out),
            Input::Result { miner, hash, nonce } => self.result(miner, hash, nonce, &mut out),
            Input::Invalid { conn, why } => self.reject(conn, &why, &mut out),
            Input::Gone(conn) => self.gone(conn, &mut out),
        }
        self.dispatch(&mut out);
        out
    }

    /// Miners connected, busy or idle.
    pub fn miners(&self) -> usize {
        self.miners.len()
    }

    /// Requests accepted and not yet answered or cancelled.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    fn join(&mut self, miner: ConnId, out: &mut Vec<Action>) {
        if self.clients.contains_key(&miner) {
            return self.reject(miner, "a client cannot join as a miner", out);
        }
        if self.miners.contains_key(&miner) {
            return; // a second Join changes nothing
        }
        self.miners.insert(miner, None);
        self.idle.push_back(miner);
        out.push(Action::Note(Note::Joined { miner }));
    }

    fn request(
        &mut self,
        client: ConnId,
        data: String,
        lower: u64,
        upper: u64,
        out: &mut Vec<Action>,
    ) {
        if self.miners.contains_key(&client) {
            return self.reject(client, "a miner cannot send requests", out);
        }
        if lower > upper {
            return self.reject(client, "empty nonce range", out);
        }
        let id = self.next_id;
        self.next_id += 1;
        // Saturating: the whole nonce space in chunks of one is 2^64 chunks,
        // one more than a u64 holds (and more than anyone will wait for).
        let chunks = ((upper - lower) / self.chunk_size).saturating_add(1);
        let deadline = self.clock.saturating_add(chunks);
        self.requests.insert(
            id,
            Request {
                client,
                data,
                deadline,
                next: Some(lower),
                upper,
                requeued: VecDeque::new(),
                in_flight: 0,
                done: 0,
                chunks,
                best: None,
            },
        );
        self.ready.insert((deadline, id));
        self.clients.entry(client).or_default().push_back(id);
        out.push(Action::Note(Note::Accepted {
            request: id,
            client,
            chunks,
            deadline,
        }));
    }

    fn result(&mut self, miner: ConnId, hash: u64, nonce: u64, out: &mut Vec<Action>) {
        let Some(Some((id, chunk))) = self.miners.get(&miner).copied() else {
            return self.reject(miner, "a result nobody asked for", out);
        };
        if !(chunk.lower..=chunk.upper).contains(&nonce) {
            return self.reject(miner, "a nonce outside its chunk", out);
        }
        self.miners.insert(miner, None);
        self.idle.push_back(miner);
        let Some(request) = self.requests.get_mut(&id) else {
            out.push(Action::Note(Note::Stale { request: id, miner }));
            return;
        };
        request.in_flight -= 1;
        request.done += 1;
        let answer = (hash, nonce);
        request.best = Some(request.best.map_or(answer, |best| best.min(answer)));
        out.push(Action::Note(Note::ChunkDone {
            request: id,
            miner,
            chunk,
        }));
        let client = request.client;
        self.answer_finished(client, out);
    }

    /// Sends the answers of `client`'s finished requests, oldest first,
    /// stopping at the first one still being worked on.
    fn answer_finished(&mut self, client: ConnId, out: &mut Vec<Action>) {
        let Some(queue) = self.clients.get_mut(&client) else {
            return;
        };
        while let Some(&id) = queue.front() {
            let request = &self.requests[&id];
            if !request.is_finished() {
                break;
            }
            // Every request has at least one chunk, so a finished one has a best.
            let (hash, nonce) = request.best.expect("a finished request has an answer");
            queue.pop_front();
            self.requests.remove(&id);
            out.push(Action::Send {
                to: client,
                msg: Message::Result { hash, nonce },
            });
            out.push(Action::Note(Note::Answered {
                request: id,
                client,
                hash,
                nonce,
            }));
        }
    }

    fn gone(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        if let Some(work) = self.miners.remove(&conn) {
            self.idle.retain(|&m| m != conn);
            if let Some((id, chunk)) = work {
                if let Some(request) = self.requests.get_mut(&id) {
                    request.in_flight -= 1;
                    request.requeued.push_front(chunk);
                    self.ready.insert((request.deadline, id));
                    out.push(Action::Note(Note::Requeued {
                        request: id,
                        miner: conn,
                        chunk,
                    }));
                }
            }
        }
        for id in self.clients.remove(&conn).unwrap_or_default() {
            if let Some(request) = self.requests.remove(&id) {
                self.ready.remove(&(request.deadline, id));
                out.push(Action::Note(Note::Cancelled {
                    request: id,
                    client: conn,
                    chunks_left: request.chunks - request.done,
                }));
            }
        }
    }

    fn reject(&mut self, conn: ConnId, why: &str, out: &mut Vec<Action>) {
        self.gone(conn, out);
        out.push(Action::Note(Note::Rejected {
            conn,
            why: why.to_string(),
        }));
        out.push(Action::Close { conn });
    }

    /// Gives idle miners chunks, earliest deadline first.
    fn dispatch(&mut self, out: &mut Vec<Action>) {
        while !self.idle.is_empty() {
            let Some(&(deadline, id)) = self.ready.first() else {
                return;
            };
            let request = self.requests.get_mut(&id).expect("a ready request exists");
            let Some(chunk) = request.take_chunk(self.chunk_size) else {
                // Cannot happen: only requests with chunks are ready.
                self.ready.remove(&(deadline, id));
                continue;
            };
            if !request.has_chunks_to_hand_out() {
                self.ready.remove(&(deadline, id));
            }
            request.in_flight += 1;
            let miner = self.idle.pop_front().expect("checked non-empty");
            self.miners.insert(miner, Some((id, chunk)));
            self.clock += 1;
            out.push(Action::Send {
                to: miner,
                msg: Message::Request {
                    data: request.data.clone(),
                    lower: chunk.lower,
                    upper: chunk.upper,
                },
            });
            out.push(Action::Note(Note::Assigned {
                request: id,
                miner,
                chunk,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    fn id(n: u32) -> ConnId {
        ConnId::from(n)
    }

    fn request(client: u32, data: &str, lower: u64, upper: u64) -> Input {
        Input::Request {
            client: id(client),
            data: data.into(),
            lower,
            upper,
        }
    }

    /// The chunks sent to miners, in order.
    fn sent_chunks(actions: &[Action]) -> Vec<(ConnId, u64, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    to,
                    msg: Message::Request { lower, upper, .. },
                } => Some((*to, *lower, *upper)),
                _ => None,
            })
            .collect()
    }

    /// The answers sent to clients, in order.
    fn answers(actions: &[Action]) -> Vec<(ConnId, u64, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    to,
                    msg: Message::Result { hash, nonce },
                } => Some((*to, *hash, *nonce)),
                _ => None,
            })
            .collect()
    }

    fn closed(actions: &[Action]) -> Vec<ConnId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Close { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect()
    }

    fn result(miner: u32, hash: u64, nonce: u64) -> Input {
        Input::Result {
            miner: id(miner),
            hash,
            nonce,
        }
    }

    #[test]
    fn a_request_is_cut_into_chunks_and_the_least_answer_wins() {
        let mut s = Scheduler::new(10);
        let out = s.handle(Input::Join(id(1)));
        assert_eq!(out, [Action::Note(Note::Joined { miner: id(1) })]);
        let out = s.handle(request(9, "d", 0, 25));
        assert_eq!(sent_chunks(&out), [(id(1), 0, 9)]);
        let out = s.handle(result(1, 50, 3));
        assert_eq!(sent_chunks(&out), [(id(1), 10, 19)]);
        let out = s.handle(result(1, 40, 12));
        assert_eq!(sent_chunks(&out), [(id(1), 20, 25)]);
        assert!(answers(&out).is_empty());
        let out = s.handle(result(1, 45, 21));
        assert_eq!(answers(&out), [(id(9), 40, 12)]);
        assert!(sent_chunks(&out).is_empty());
        assert_eq!(s.pending_requests(), 0);
    }

    #[test]
    fn equal_hashes_go_to_the_smaller_nonce() {
        let mut s = Scheduler::new(1);
        s.handle(Input::Join(id(1)));
        s.handle(Input::Join(id(2)));
        s.handle(request(9, "d", 0, 1));
        s.handle(result(2, 7, 1));
        let out = s.handle(result(1, 7, 0));
        assert_eq!(answers(&out), [(id(9), 7, 0)]);
    }

    #[test]
    fn idle_miners_get_work_at_once_longest_idle_first() {
        let mut s = Scheduler::new(10);
        for m in 1..=3 {
            s.handle(Input::Join(id(m)));
        }
        let out = s.handle(request(9, "d", 0, 99));
        assert_eq!(
            sent_chunks(&out),
            [(id(1), 0, 9), (id(2), 10, 19), (id(3), 20, 29)]
        );
        // A miner joining in the middle of a request is put to work at once.
        let out = s.handle(Input::Join(id(4)));
        assert_eq!(sent_chunks(&out), [(id(4), 30, 39)]);
        assert_eq!(s.miners(), 4);
    }

    #[test]
    fn the_last_chunk_ends_at_the_top_of_the_range_without_overflow() {
        let mut s = Scheduler::new(4);
        s.handle(Input::Join(id(1)));
        let out = s.handle(request(9, "d", u64::MAX - 5, u64::MAX));
        assert_eq!(sent_chunks(&out), [(id(1), u64::MAX - 5, u64::MAX - 2)]);
        let out = s.handle(result(1, 1, u64::MAX - 4));
        assert_eq!(sent_chunks(&out), [(id(1), u64::MAX - 1, u64::MAX)]);

        // The whole nonce space in chunks of one nonce: counted (saturating
        // at 2^64 - 1), not stored.
        let mut s = Scheduler::new(1);
        let out = s.handle(request(9, "d", 0, u64::MAX));
        assert!(matches!(
            out[..],
            [Action::Note(Note::Accepted {
                chunks: u64::MAX,
                ..
            })]
        ));
    }

    #[test]
    fn a_lost_miners_chunk_goes_to_the_next_miner_first() {
        let mut s = Scheduler::new(10);
        s.handle(Input::Join(id(1)));
        s.handle(Input::Join(id(2)));
        s.handle(request(9, "d", 0, 99));
        let out = s.handle(Input::Gone(id(1)));
        assert!(sent_chunks(&out).is_empty(), "no idle miner to take it");
        assert!(out.contains(&Action::Note(Note::Requeued {
            request: 0,
            miner: id(1),
            chunk: Chunk { lower: 0, upper: 9 },
        })));
        // The requeued chunk comes before the rest of the range.
        let out = s.handle(result(2, 5, 15));
        assert_eq!(sent_chunks(&out), [(id(2), 0, 9)]);
    }

    #[test]
    fn with_every_miner_lost_the_work_waits_for_a_new_one() {
        let mut s = Scheduler::new(10);
        s.handle(Input::Join(id(1)));
        s.handle(request(9, "d", 0, 5));
        s.handle(Input::Gone(id(1)));
        assert_eq!(s.miners(), 0);
        let out = s.handle(Input::Join(id(2)));
        assert_eq!(sent_chunks(&out), [(id(2), 0, 5)]);
        let out = s.handle(result(2, 3, 4));
        assert_eq!(answers(&out), [(id(9), 3, 4)]);
    }

    #[test]
    fn a_lost_clients_requests_are_dropped_and_late_results_ignored() {
        let mut s = Scheduler::new(10);
        s.handle(Input::Join(id(1)));
        s.handle(Input::Join(id(2)));
        s.handle(request(8, "big", 0, 999));
        let out = s.handle(Input::Gone(id(8)));
        assert!(out.contains(&Action::Note(Note::Cancelled {
            request: 0,
            client: id(8),
            chunks_left: 100,
        })));
        assert_eq!(s.pending_requests(), 0);
        // The miners finish their chunks; the results go nowhere and the
        // miners are free for the next request at once.
        let out = s.handle(result(1, 1, 1));
        assert_eq!(
            out,
            [Action::Note(Note::Stale {
                request: 0,
                miner: id(1)
            })]
        );
        let out = s.handle(request(9, "small", 0, 9));
        assert_eq!(sent_chunks(&out), [(id(1), 0, 9)]);
        let out = s.handle(result(2, 1, 11));
        assert!(sent_chunks(&out).is_empty(), "nothing left of the big one");
    }

    #[test]
    fn a_small_request_overtakes_a_large_one() {
        let mut s = Scheduler::new(10);
        s.handle(Input::Join(id(1)));
        s.handle(Input::Join(id(2)));
        s.handle(request(8, "large", 0, 9_999)); // 1000 chunks
        let out = s.handle(request(9, "small", 0, 29)); // 3 chunks
        assert!(sent_chunks(&out).is_empty(), "both miners busy");
        // Each miner that comes free takes the small request's chunks.
        let out = s.handle(result(1, 9, 0));
        assert_eq!(sent_chunks(&out), [(id(1), 0, 9)]);
        let out = s.handle(result(2, 9, 10));
        assert_eq!(sent_chunks(&out), [(id(2), 10, 19)]);
        let out = s.handle(result(1, 9, 0));
        assert_eq!(sent_chunks(&out), [(id(1), 20, 29)]);
        // Then the large one goes on where it was.
        let out = s.handle(result(2, 9, 10));
        assert_eq!(sent_chunks(&out), [(id(2), 20, 29)]);
        let out = s.handle(result(1, 9, 20));
        assert_eq!(answers(&out), [(id(9), 9, 0)]);
        assert_eq!(sent_chunks(&out), [(id(1), 30, 39)]);
    }

    #[test]
    fn equal_requests_finish_in_the_order_they_arrived() {
        let mut s = Scheduler::new(10);
        s.handle(Input::Join(id(1)));
        for client in 10..15 {
            s.handle(request(client, "same", 0, 49));
        }
        let mut finished = Vec::new();
        while let Some(nonce) = sent_nonce(&s, 1) {
            let out = s.handle(result(1, 1, nonce));
            finished.extend(answers(&out).into_iter().map(|(c, _, _)| c));
        }
        assert_eq!(finished, (10..15).map(id).collect::<Vec<_>>());
    }

    /// The lower bound of the chunk `miner` holds (a valid nonce to answer
    /// with), or `None` if it is idle.
    fn sent_nonce(s: &Scheduler, miner: u32) -> Option<u64> {
        s.miners[&id(miner)].map(|(_, chunk)| chunk.lower)
    }

    #[test]
    fn a_stream_of_small_requests_does_not_starve_a_large_one() {
        let mut s = Scheduler::new(1);
        s.handle(Input::Join(id(1)));
        s.handle(request(8, "large", 0, 99)); // 100 chunks
        let mut deadlines = HashMap::from([(0, 100)]); // request 0 is the large one
        let mut overtaken_by = Vec::new();
        for step in 0..1_000u32 {
            // Two chunks of new work arrive for every chunk done: more than
            // the miner can do, so plain shortest-first would never get back
            // to the large request.
            let mut out = s.handle(request(1000 + step, "small", 0, 1));
            let nonce = sent_nonce(&s, 1).expect("the miner is never idle");
            out.extend(s.handle(result(1, 1, nonce)));
            for action in &out {
                match action {
                    Action::Note(Note::Accepted {
                        request, deadline, ..
                    }) => {
                        deadlines.insert(*request, *deadline);
                    }
                    Action::Note(Note::Assigned { request, .. }) if deadlines[request] > 100 => {
                        overtaken_by.push(*request);
                    }
                    _ => {}
                }
            }
            if answers(&out).iter().any(|&(c, _, _)| c == id(8)) {
                // Only work due before the large request went ahead of it:
                // a finite amount, however long the stream of small ones.
                assert!(overtaken_by.is_empty(), "went first: {overtaken_by:?}");
                return;
            }
        }
        panic!("the large request never finished");
    }

    #[test]
    fn answers_go_back_in_the_order_a_client_asked() {
        let mut s = Scheduler::new(10);
        s.handle(Input::Join(id(1)));
        s.handle(Input::Join(id(2)));
        s.handle(request(9, "first", 0, 19)); // chunks to miners 1 and 2
        s.handle(request(9, "second", 0, 9));
        let out = s.handle(result(1, 5, 0)); // miner 1 takes "second"
        assert_eq!(sent_chunks(&out), [(id(1), 0, 9)]);
        let out = s.handle(result(1, 6, 1)); // "second" is done first ...
        assert!(answers(&out).is_empty(), "held back behind the first");
        let out = s.handle(result(2, 7, 12)); // ... then "first"
        assert_eq!(answers(&out), [(id(9), 5, 0), (id(9), 6, 1)]);
    }

    #[test]
    fn protocol_breakers_are_closed_and_forgotten() {
        let mut s = Scheduler::new(10);
        // A Result from a stranger, and from an idle miner.
        assert_eq!(closed(&s.handle(result(5, 1, 1))), [id(5)]);
        s.handle(Input::Join(id(1)));
        assert_eq!(closed(&s.handle(result(1, 1, 1))), [id(1)]);
        assert_eq!(s.miners(), 0);
        // A nonce outside the chunk: the miner goes, the chunk is requeued.
        s.handle(Input::Join(id(2)));
        s.handle(request(9, "d", 0, 9));
        let out = s.handle(result(2, 1, 10));
        assert_eq!(closed(&out), [id(2)]);
        assert_eq!(s.miners(), 0);
        let out = s.handle(Input::Join(id(3)));
        assert_eq!(sent_chunks(&out), [(id(3), 0, 9)]);
        // An empty range, a client joining, a miner asking.
        assert_eq!(closed(&s.handle(request(7, "d", 5, 4))), [id(7)]);
        assert_eq!(closed(&s.handle(Input::Join(id(9)))), [id(9)]);
        assert_eq!(s.pending_requests(), 0);
        assert_eq!(closed(&s.handle(request(3, "d", 0, 1))), [id(3)]);
        // Junk from a busy miner: it goes, its chunk is requeued.
        s.handle(Input::Join(id(4)));
        s.handle(request(6, "e", 0, 9)); // request 1
        let out = s.handle(Input::Invalid {
            conn: id(4),
            why: "junk".into(),
        });
        assert_eq!(closed(&out), [id(4)]);
        assert!(out.contains(&Action::Note(Note::Requeued {
            request: 1,
            miner: id(4),
            chunk: Chunk { lower: 0, upper: 9 },
        })));
        // A second Join is harmless.
        s.handle(Input::Join(id(5)));
        assert!(closed(&s.handle(Input::Join(id(5)))).is_empty());
    }

    /// Random interleavings of joins, requests, answers and losses against a
    /// pool of honest fake miners: every request that is not cancelled is
    /// answered exactly once, with the true least (hash, nonce), in its
    /// client's order.
    #[test]
    fn random_histories_give_exact_answers() {
        for seed in 0..200 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut s = Scheduler::new(rng.gen_range(1..20));
            let mut next_conn = 0u32;
            let mut miners: Vec<ConnId> = Vec::new();
            let mut busy: BTreeMap<ConnId, (String, u64, u64)> = BTreeMap::new();
            let mut asked: BTreeMap<ConnId, VecDeque<(u64, u64)>> = BTreeMap::new();
            let mut lost_clients = Vec::new();
            for _ in 0..300 {
                let input = match rng.gen_range(0..10) {
                    0 | 1 => {
                        next_conn += 1;
                        miners.push(id(next_conn));
                        Input::Join(id(next_conn))
                    }
                    2 | 3 => {
                        next_conn += 1;
                        let data = format!("d{}", rng.gen_range(0..3));
                        let lower = rng.gen_range(0..50);
                        let upper = lower + rng.gen_range(0..60);
                        let best = toy_min_hash(&data, lower, upper);
                        asked.entry(id(next_conn)).or_default().push_back(best);
                        Input::Request {
                            client: id(next_conn),
                            data,
                            lower,
                            upper,
                        }
                    }
                    4 if !miners.is_empty() => {
                        let m = miners.swap_remove(rng.gen_range(0..miners.len()));
                        busy.remove(&m);
                        Input::Gone(m)
                    }
                    5 if !asked.is_empty() => {
                        let c = *asked.keys().next().unwrap();
                        asked.remove(&c);
                        lost_clients.push(c);
                        Input::Gone(c)
                    }
                    _ if !busy.is_empty() => {
                        let m = *busy.keys().nth(rng.gen_range(0..busy.len())).unwrap();
                        let (data, lower, upper) = busy.remove(&m).unwrap();
                        let (hash, nonce) = toy_min_hash(&data, lower, upper);
                        Input::Result {
                            miner: m,
                            hash,
                            nonce,
                        }
                    }
                    _ => continue,
                };
                let out = s.handle(input);
                check(&out, &mut busy, &mut asked, &lost_clients);
            }
            // Keep a miner around and let the pool finish everything left.
            let out = s.handle(Input::Join(id(next_conn + 1)));
            check(&out, &mut busy, &mut asked, &lost_clients);
            while let Some(&m) = busy.keys().next() {
                let (data, lower, upper) = busy.remove(&m).unwrap();
                let (hash, nonce) = toy_min_hash(&data, lower, upper);
                let out = s.handle(Input::Result {
                    miner: m,
                    hash,
                    nonce,
                });
                check(&out, &mut busy, &mut asked, &lost_clients);
            }
            assert!(
                asked.values().all(VecDeque::is_empty),
                "seed {seed}: unanswered"
            );
            assert_eq!(s.pending_requests(), 0, "seed {seed}");
        }
    }

    /// A stand-in for SHA-256 that is cheap in debug builds and has many
    /// equal hashes, so that ties between chunks are common.
    fn toy_min_hash(data: &str, lower: u64, upper: u64) -> (u64, u64) {
        let toy = |nonce: u64| (nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ data.len() as u64) % 40;
        (lower..=upper).map(|n| (toy(n), n)).min().unwrap()
    }

    /// Applies one batch of actions to the fake pool, checking each.
    fn check(
        out: &[Action],
        busy: &mut BTreeMap<ConnId, (String, u64, u64)>,
        asked: &mut BTreeMap<ConnId, VecDeque<(u64, u64)>>,
        lost_clients: &[ConnId],
    ) {
        for action in out {
            match action {
                Action::Send {
                    to,
                    msg: Message::Request { data, lower, upper },
                } => {
                    let chunk = (data.clone(), *lower, *upper);
                    assert!(busy.insert(*to, chunk).is_none(), "two chunks on {to}");
                }
                Action::Send {
                    to,
                    msg: Message::Result { hash, nonce },
                } => {
                    assert!(!lost_clients.contains(to), "answer to a lost client");
                    let expected = asked.get_mut(to).and_then(VecDeque::pop_front);
                    assert_eq!(Some((*hash, *nonce)), expected, "answer to {to}");
                }
                Action::Send { msg, .. } => panic!("the server never sends {msg}"),
                Action::Close { conn } => panic!("honest {conn} closed"),
                Action::Note(Note::Rejected { conn, why }) => {
                    panic!("honest {conn} rejected: {why}")
                }
                Action::Note(_) => {}
            }
        }
    }
}
