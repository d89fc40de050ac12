//! A deterministic network simulator for the shipped protocol cores.
//!
//! One [`ServerCore`] (the connection table, exactly as the threaded server
//! drives it) and one [`ClientCore`] per client exchange real encoded
//! datagrams through a simulated network driven by a seeded generator. Each
//! client has a fake address (`10.0.0.2:10000 + index`; a restarted client
//! keeps it), storm senders have their own; none is ever used on a network,
//! they are keys. The server is on a wildcard address of a host with two
//! (`10.0.0.1` and `10.0.1.1`, port 9000): each client, and each storm
//! sender, sends to one of them, chosen per sender from the seed (by a
//! generator of its own, so the rest of a scenario replays as it did
//! before there were two); the server is told where each datagram was sent
//! (`PolledServer::handle_to`), and every datagram it sends a client must
//! leave from the address that client sends to (`poll_transmit_from`), or
//! the client's connected socket would drop it. Time is virtual: an `Instant` base plus ticks, an epoch
//! being `TICKS_PER_EPOCH` ticks, so delays and reordering happen inside
//! epochs too. Nothing here reads a clock or touches a socket, so a scenario
//! replays exactly from its description.
//!
//! Every step checks the protocol's invariants with shadow models: one
//! shadow per connection on either side (read through `ServerCore::conn`
//! and `ClientCore::conn`, never written), a shadow of the table (which
//! connection lives at which address, what a Connect must do), and the
//! order of every output. A broken invariant panics with the tick, the
//! connection and what was expected.
//!
//! This file holds `Sim` and its run loop (the applications' steps and the
//! final checks); the rest, each adding its own `impl Sim`: `scenario`
//! (what defines a run, what it ended with), `network` (addresses, faults,
//! delivery, the damage model), `shadow` (the shadow models and the
//! table's rules), `server` and `client` (each side's inputs and outputs,
//! checked), and `epoch` (one epoch on every side, checked).

mod client;
mod epoch;
mod network;
mod scenario;
mod server;
mod shadow;

pub use network::undetectable_damage;
pub use scenario::{Outcome, Scenario};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use liveseq::proto::{Message, PolledServer, ServerConfig};
use liveseq::{ConnState, Params, ReconnectPolicy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use client::Client;
use network::{Datagram, Node, SERVER_IPS};
use shadow::{End, Shadow};

pub const TICKS_PER_EPOCH: u64 = 4;

/// Scenarios run with 1 ms epochs: a tick is a quarter of one.
const TICK: Duration = Duration::from_micros(250);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    Epoch,
    Other,
}

pub struct Sim {
    sc: Scenario,
    p: Params,
    policy: Option<ReconnectPolicy>,
    rng: SmallRng,
    tick: u64,
    base: Instant,
    net: Vec<Datagram>,
    next_order: u64,
    server: PolledServer,
    /// Every server connection ever, by id.
    sconns: HashMap<u32, Shadow>,
    /// The shadow of the table: the live connection at each address.
    live: HashMap<SocketAddr, u32>,
    /// When (epochs done) the last connection from an address with an ISN ended.
    ended_at: HashMap<(SocketAddr, u64), u64>,
    /// Addresses refused (and announced) in this epoch.
    refused_now: HashSet<SocketAddr>,
    server_closing: bool,
    server_drained: bool,
    /// The id `close_conn` is being called for (its `Closed` event is expected).
    closing_conn: Option<u32>,
    /// The connections the Connect being handled evicts, by the decision.
    evicting: Vec<u32>,
    /// The connections whose challenge ends unanswered at this epoch.
    challenge_expiring: HashSet<u32>,
    /// Closing connections (server ids) whose stall limit runs out at this epoch.
    stall_expiring: HashSet<u32>,
    /// The client connection (in `cconns`) whose stall limit runs out at this epoch.
    client_stalling: Option<usize>,
    /// Encoded size of the datagram the server is handling.
    incoming_len: u64,
    admissions: u64,
    /// The kind of the server input being handled.
    server_input: Input,
    clients: Vec<Client>,
    /// The server address each client sends to, by client index.
    server_ips: Vec<IpAddr>,
    /// The server address each storm sender sends to.
    storm_server_ips: Vec<IpAddr>,
    /// Every client connection ever (across reconnects and restarts).
    cconns: Vec<Shadow>,
    cconn_by_key: HashMap<(SocketAddr, u64), usize>,
    /// Before a client's epoch: its connection's oldest unacknowledged and
    /// next unsent sequence numbers, and what is in flight (for the
    /// messages a reconnect carries over).
    pre_epoch: Option<(u64, u64, BTreeSet<u64>)>,
    aborting: bool,
    partition: Option<(u64, u64)>,
    payload_counter: u64,
    /// `on_epoch` rounds so far: a send is stamped with it, so a message sent
    /// just before an epoch is due for its first resend at that epoch.
    epochs_done: u64,
    outcome: Outcome,
    /// Per receiving side (true: the server), connection id and sequence
    /// number: damaged payloads that pass LSP's integrity rules, as the
    /// receiver will see them.
    undetectable: HashMap<(bool, u32, u64), Vec<Vec<u8>>>,
}

impl Sim {
    pub fn new(sc: &Scenario) -> Sim {
        let p = sc.params();
        p.validate().expect("scenario parameters");
        let mut rng = SmallRng::seed_from_u64(sc.seed);
        let partition = (sc.partition_epochs > 0).then(|| {
            let start = rng.gen_range(0..20 * TICKS_PER_EPOCH);
            (start, start + sc.partition_epochs * TICKS_PER_EPOCH)
        });
        let mut config = ServerConfig::new(p);
        // Random connection ids, as on a network, replayed by the seed.
        config.id_seed = Some(sc.seed ^ 0x1d5_eed);
        config.coalesce_acks = sc.coalesce;
        if sc.max_connections > 0 {
            config.max_connections = sc.max_connections;
        }
        // Which of the server's addresses each sender uses: from the seed,
        // by a generator of its own (the main one's draws stay as they were).
        let mut locals = SmallRng::seed_from_u64(sc.seed ^ 0x10ca_1add_7e55);
        let mut pick = |_| SERVER_IPS[locals.gen_range(0..SERVER_IPS.len())];
        let server_ips = (0..sc.clients).map(&mut pick).collect();
        let storm_server_ips = (0..sc.storm).map(&mut pick).collect();
        let mut sim = Sim {
            sc: sc.clone(),
            p,
            policy: sc.policy(),
            rng,
            tick: 0,
            base: Instant::now(),
            net: Vec::new(),
            next_order: 0,
            server: PolledServer::new(config),
            sconns: HashMap::new(),
            live: HashMap::new(),
            ended_at: HashMap::new(),
            refused_now: HashSet::new(),
            server_closing: false,
            server_drained: false,
            closing_conn: None,
            evicting: Vec::new(),
            challenge_expiring: HashSet::new(),
            stall_expiring: HashSet::new(),
            client_stalling: None,
            incoming_len: 0,
            admissions: 0,
            server_input: Input::Other,
            clients: Vec::new(),
            server_ips,
            storm_server_ips,
            cconns: Vec::new(),
            cconn_by_key: HashMap::new(),
            pre_epoch: None,
            aborting: false,
            partition,
            payload_counter: 0,
            epochs_done: 0,
            outcome: Outcome::default(),
            undetectable: HashMap::new(),
        };
        for c in 0..sc.clients {
            let restart_at = sim.chance(sc.restart).then(|| {
                sim.rng
                    .gen_range(2 * TICKS_PER_EPOCH..=30 * TICKS_PER_EPOCH)
            });
            let core = sim.new_client_core(c, 0);
            sim.clients.push(core);
            sim.clients[c].restart_at = restart_at;
        }
        // The storm: raw Connects from many addresses in the first epochs,
        // some repeated, some with a second ISN (a restart of the sender).
        for j in 0..sc.storm {
            let mut isn = u64::from(sim.rng.r#gen::<u32>());
            for _ in 0..sim.rng.gen_range(1..=3) {
                if sim.chance(20) {
                    isn = u64::from(sim.rng.r#gen::<u32>());
                }
                let mut bytes = Vec::new();
                Message::connect(isn).encode(&mut bytes);
                let due = sim.rng.gen_range(1..=10 * TICKS_PER_EPOCH);
                let order = sim.next_order + sim.rng.gen_range(0..1000);
                sim.next_order += 1;
                sim.net.push(Datagram {
                    due,
                    order,
                    from: Node::Storm(j),
                    to: Node::Server,
                    server_ip: sim.storm_server_ips[j],
                    bytes,
                });
            }
        }
        sim
    }

    fn now(&self) -> Instant {
        self.base + TICK * self.tick as u32
    }

    fn fail(&self, who: &str, what: String) -> ! {
        panic!(
            "tick {} (epoch {}), {who}: {what}\nscenario: {}",
            self.tick, self.epochs_done, self.sc
        );
    }

    /// Runs the scenario to its end; panics on any broken invariant.
    pub fn run(mut self) -> Outcome {
        let limit_ticks = 4000 * TICKS_PER_EPOCH;
        // The first state output and the initial Connects.
        for c in 0..self.clients.len() {
            self.first_outputs(c);
        }
        while !self.done() {
            if self.tick > limit_ticks {
                let states: Vec<String> = self
                    .cconns
                    .iter()
                    .chain(self.sconns.values())
                    .filter(|t| t.end.is_none())
                    .map(|t| {
                        format!(
                            "{}: id {} closing {} wrote {} read {} received {} silent {} misadopted {}",
                            t.name,
                            t.id,
                            t.closing,
                            t.written.len(),
                            t.delivered,
                            t.received,
                            t.silent,
                            t.misadopted
                        )
                    })
                    .collect();
                self.fail(
                    "simulation",
                    format!(
                        "did not finish (server closing {}, drained {}):\n  {}",
                        self.server_closing,
                        self.server_drained,
                        states.join("\n  ")
                    ),
                );
            }
            self.tick += 1;
            self.deliver_due();
            self.client_timeouts();
            self.restarts();
            self.application_steps();
            if self.tick % TICKS_PER_EPOCH == 0 {
                self.epoch_tick();
                self.client_timeouts();
            }
            self.check_table();
        }
        self.final_checks()
    }

    fn done(&self) -> bool {
        self.server_drained && self.clients.iter().all(|c| c.done)
    }

    fn chance(&mut self, percent: u8) -> bool {
        percent > 0 && self.rng.gen_range(0..100u8) < percent
    }

    /// The applications: write the workload, close when done.
    fn application_steps(&mut self) {
        let n = self.sc.messages;
        let now = self.now();
        for c in 0..self.clients.len() {
            if self.clients[c].done {
                continue;
            }
            // Client c writes its next message now and then, also while
            // reconnecting (it waits for the new connection).
            let cl = &self.clients[c];
            let writable = matches!(
                cl.state,
                ConnState::Connected | ConnState::Reconnecting { .. }
            );
            if writable && !cl.closing && cl.written < n && self.rng.gen_bool(0.5) {
                let payload = self.next_payload();
                if let Err(e) = self.clients[c].core.write(now, &payload) {
                    self.fail(&format!("client {c}"), format!("write failed: {e}"));
                }
                let index = self.clients[c].conn;
                self.cconns[index].written.push(payload);
                self.clients[c].written += 1;
                self.client_pump(c, Input::Other);
            }
            // Closes: once everything is written (and, unless closing early,
            // read on this connection; after three reconnects it stops
            // waiting for that); while reconnecting now and then; a
            // connection that took another's id after a while (it may never
            // finish).
            let cl = &self.clients[c];
            if cl.closing || cl.done {
                if cl.closing
                    && !cl.done
                    && self.tick - cl.close_tick
                        > 8 * u64::from(self.p.epoch_limit) * TICKS_PER_EPOCH
                    && self.cconns[cl.conn].misadopted
                {
                    self.aborting = true;
                    self.clients[c].core.abort(now);
                    self.client_pump(c, Input::Other);
                    self.aborting = false;
                    self.clients[c].done = true;
                }
                continue;
            }
            let t = &self.cconns[cl.conn];
            let mut close = false;
            let mut early = false;
            if cl.state == ConnState::Connected && cl.written == n {
                let read_all = t.delivered == n;
                let tired = cl.reconnects >= 3;
                early = !read_all && (tired || self.chance(self.sc.early_close));
                close = read_all || early;
            }
            let reconnecting = matches!(self.clients[c].state, ConnState::Reconnecting { .. });
            if reconnecting && self.chance(self.sc.reconnect_close) {
                close = true;
                self.outcome.closes_while_reconnecting += 1;
            }
            let cl = &self.clients[c];
            let t = &self.cconns[cl.conn];
            let patience = 2 * u64::from(self.p.epoch_limit) * TICKS_PER_EPOCH;
            if t.misadopted
                && self.tick - t.misadopted_at > patience
                && cl.state == ConnState::Connected
            {
                close = true;
            }
            if close {
                let index = cl.conn;
                let cl = &mut self.clients[c];
                cl.closing = true;
                cl.close_tick = self.tick;
                let t = &mut self.cconns[index];
                t.closing = true;
                t.closed_before_reading_all = early;
                self.clients[c].core.close(now);
                self.client_pump(c, Input::Other);
            }
        }
        self.server_app();
    }

    fn next_payload(&mut self) -> Vec<u8> {
        self.payload_counter += 1;
        let len = self.rng.gen_range(0..=self.sc.max_size);
        let mut p: Vec<u8> = (0..len).map(|_| self.rng.r#gen()).collect();
        // Make every payload unique, so a duplicate delivery cannot hide.
        p.extend_from_slice(&self.payload_counter.to_le_bytes());
        p
    }

    /// Exactly-once in order at both ends, or the connection reported lost.
    fn final_checks(mut self) -> Outcome {
        if !self.server.connections().is_empty() || self.server.totals().active != 0 {
            self.fail("server", "connections left in the table".into());
        }
        for s in self.sconns.values() {
            if s.end.is_none() {
                self.fail(&s.name, "no terminal state".into());
            }
        }
        // The core's own counts agree with the shadow table's.
        let totals = self.server.totals();
        let counted = (
            totals.challenged_connects,
            totals.evicted_unvalidated,
            totals.slow_consumers,
            totals.budget_refusals,
        );
        let modelled = (
            self.outcome.challenged as u64,
            self.outcome.evicted as u64,
            0,
            0,
        );
        if counted != modelled {
            self.fail(
                "server",
                format!("totals (challenged, evicted, slow consumers, budget refusals) {counted:?}, expected {modelled:?}"),
            );
        }
        let mut out = std::mem::take(&mut self.outcome);
        out.amplification_held_bytes = totals.amplification_held_bytes;
        out.ticks = self.tick;
        for s in self.sconns.values() {
            out.delivered += s.delivered;
            let Some(&ci) = self.cconn_by_key.get(&(s.addr, s.isn)) else {
                continue;
            };
            let client = &self.cconns[ci];
            if client.misadopted || s.misadopted {
                continue;
            }
            for (sender, receiver) in [(client, s), (s, client)] {
                let complete =
                    sender.end == Some(End::Drained) && !receiver.closed_before_reading_all;
                if complete
                    && receiver.delivered != sender.written.len()
                    && receiver.end != Some(End::Lost)
                {
                    panic!(
                        "{} drained {} messages but {} read {}\nscenario: {}",
                        sender.name,
                        sender.written.len(),
                        receiver.name,
                        receiver.delivered,
                        self.sc
                    );
                }
            }
        }
        for t in &self.cconns {
            out.delivered += t.delivered;
            if t.misadopted && t.end == Some(End::Drained) {
                let delivered = self
                    .sconns
                    .values()
                    .find(|s| s.addr == t.addr && s.isn == t.isn)
                    .map_or(0, |s| s.delivered);
                out.silently_lost += t.written.len().saturating_sub(delivered);
            }
        }
        let all = || self.cconns.iter().chain(self.sconns.values());
        out.lost = all().filter(|t| t.end == Some(End::Lost)).count();
        out.drained = all().filter(|t| t.end == Some(End::Drained)).count();
        out.retransmissions = all().map(|t| t.retransmissions).sum();
        // A perfect network loses nothing: every client drains, every
        // message arrives. (Server connections may end Lost: LSP has no
        // close message, so they learn of the client's close by its silence.)
        if !self.sc.faulty() {
            for (c, cl) in self.clients.iter().enumerate() {
                let t = &self.cconns[cl.conn];
                if !cl.drained || t.end != Some(End::Drained) {
                    panic!(
                        "client {c} ended {:?} on a perfect network\nscenario: {}",
                        t.end, self.sc
                    );
                }
            }
        }
        out
    }
}
