//! A deterministic network simulator for the shipped protocol cores.
//!
//! One [`ServerCore`] (the connection table, exactly as the threaded server
//! drives it) and one [`ClientCore`] per client exchange real encoded
//! datagrams through a simulated network driven by a seeded generator. Each
//! client has a fake address (`10.0.0.2:10000 + index`; a restarted client
//! keeps it), storm senders have their own; none is ever used on a network,
//! they are keys. Time is virtual: an `Instant` base plus ticks, an epoch
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use liveseq::proto::{
    checksum, ClientConfig, ClientCore, ClientOutput, Message, MsgType, Phase, PolledServer,
    ServerConfig, ServerOutput, AMPLIFICATION_FACTOR, CHALLENGE_EPOCHS, CONNECT_REACKS,
};
use liveseq::{ConnId, ConnState, Params, ReconnectPolicy, ServerEvent};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const TICKS_PER_EPOCH: u64 = 4;

/// Scenarios run with 1 ms epochs: a tick is a quarter of one.
const TICK: Duration = Duration::from_micros(250);

const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 9000);

fn client_addr(c: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 10000 + c as u16)
}

fn storm_addr(j: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), 20000 + j as u16)
}

fn node_of(addr: SocketAddr) -> Node {
    match addr.ip() {
        IpAddr::V4(ip) if ip.octets()[3] == 2 => Node::Client(usize::from(addr.port() - 10000)),
        IpAddr::V4(ip) if ip.octets()[3] == 3 => Node::Storm(usize::from(addr.port() - 20000)),
        _ => Node::Server,
    }
}

/// Everything that defines one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub window: u32,
    pub max_unacked: u32,
    pub max_backoff: u32,
    pub epoch_limit: u32,
    pub clients: usize,
    /// Messages each client writes to the server, and the server to each connection.
    pub messages: usize,
    /// Largest payload.
    pub max_size: usize,
    pub drop: u8,
    pub duplicate: u8,
    /// Percent of datagrams delayed, by up to `max_delay_epochs` epochs.
    pub delay: u8,
    pub max_delay_epochs: u64,
    pub corrupt: u8,
    pub shorten: u8,
    pub lengthen: u8,
    /// Cut client 0 off completely for this many epochs, from a random moment.
    pub partition_epochs: u64,
    pub coalesce: bool,
    /// Percent of closes issued before the closing side has read everything.
    pub early_close: u8,
    pub seed: u64,
    /// The server's `max_connections` (0: no limit).
    pub max_connections: usize,
    /// Extra addresses that each send 1 to 3 raw Connects in the first
    /// epochs (a storm); what the server sends them goes nowhere.
    pub storm: usize,
    /// Percent of clients that restart once mid-run: a fresh `ClientCore`
    /// with a new ISN on the same address.
    pub restart: u8,
    /// Clients reconnect after a loss, waiting up to this many epochs
    /// (0: they do not reconnect).
    pub reconnect_epochs: u64,
    /// Reconnect attempts before giving up (0: never).
    pub max_attempts: u32,
    /// Percent chance, per tick, that a reconnecting client closes.
    pub reconnect_close: u8,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "w={},m={},b={},l={},c={},n={},s={},drop={},dup={},delay={},de={},corrupt={},short={},long={},part={},co={},early={},seed={},maxc={},storm={},restart={},rc={},ra={},rclose={}",
            self.window,
            self.max_unacked,
            self.max_backoff,
            self.epoch_limit,
            self.clients,
            self.messages,
            self.max_size,
            self.drop,
            self.duplicate,
            self.delay,
            self.max_delay_epochs,
            self.corrupt,
            self.shorten,
            self.lengthen,
            self.partition_epochs,
            u8::from(self.coalesce),
            self.early_close,
            self.seed,
            self.max_connections,
            self.storm,
            self.restart,
            self.reconnect_epochs,
            self.max_attempts,
            self.reconnect_close,
        )
    }
}

impl FromStr for Scenario {
    type Err = String;

    /// Fields after `seed` may be left out (lines printed before they
    /// existed): they default to 0, which turns them off.
    fn from_str(s: &str) -> Result<Scenario, String> {
        let fields: HashMap<&str, u64> = s
            .split(',')
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("bad field {kv:?}"))?;
                Ok((
                    k.trim(),
                    v.trim().parse::<u64>().map_err(|e| format!("{k}: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        let get = |k: &str| fields.get(k).copied().ok_or_else(|| format!("missing {k}"));
        let opt = |k: &str| fields.get(k).copied().unwrap_or(0);
        Ok(Scenario {
            window: get("w")? as u32,
            max_unacked: get("m")? as u32,
            max_backoff: get("b")? as u32,
            epoch_limit: get("l")? as u32,
            clients: get("c")? as usize,
            messages: get("n")? as usize,
            max_size: get("s")? as usize,
            drop: get("drop")? as u8,
            duplicate: get("dup")? as u8,
            delay: get("delay")? as u8,
            max_delay_epochs: get("de")?,
            corrupt: get("corrupt")? as u8,
            shorten: get("short")? as u8,
            lengthen: get("long")? as u8,
            partition_epochs: get("part")?,
            coalesce: get("co")? != 0,
            early_close: get("early")? as u8,
            seed: get("seed")?,
            max_connections: opt("maxc") as usize,
            storm: opt("storm") as usize,
            restart: opt("restart") as u8,
            reconnect_epochs: opt("rc"),
            max_attempts: opt("ra") as u32,
            reconnect_close: opt("rclose") as u8,
        })
    }
}

impl Scenario {
    pub fn params(&self) -> Params {
        Params {
            epoch_limit: self.epoch_limit,
            epoch_millis: 1,
            window_size: self.window,
            max_unacked_messages: self.max_unacked,
            max_backoff_interval: self.max_backoff,
        }
    }

    /// The clients' reconnect policy: a redial within `reconnect_epochs`
    /// epochs, then within twice that.
    pub fn policy(&self) -> Option<ReconnectPolicy> {
        (self.reconnect_epochs > 0).then(|| {
            let k = TICK * (TICKS_PER_EPOCH * self.reconnect_epochs) as u32;
            ReconnectPolicy {
                delays: vec![(Duration::ZERO, k), (k, 2 * k)],
                max_attempts: (self.max_attempts > 0).then_some(self.max_attempts),
            }
        })
    }

    fn faulty(&self) -> bool {
        self.drop > 0
            || self.delay > 0
            || self.corrupt > 0
            || self.shorten > 0
            || self.partition_epochs > 0
            || self.max_connections > 0
            || self.storm > 0
            || self.restart > 0
    }
}

/// What a run ended with, for tests that look beyond the invariants.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ticks: u64,
    /// Messages delivered to the applications, both ways.
    pub delivered: usize,
    /// Connections (either side) that ended lost.
    pub lost: usize,
    /// Connections (either side) that ended drained.
    pub drained: usize,
    pub retransmissions: u64,
    /// Server connections admitted.
    pub admitted: usize,
    /// `Refused` outputs of the server (one per address per epoch).
    pub refused: usize,
    /// Connects with another ISN from a live connection's address, which
    /// challenged it (RFC 5961).
    pub challenged: usize,
    /// Challenges answered by the connection's peer (it stayed).
    pub challenges_answered: usize,
    /// Connections ended by an unanswered challenge.
    pub challenge_ends: usize,
    /// Connections ended before they were validated, to make way for a new one.
    pub evicted: usize,
    /// Datagrams to unvalidated addresses held back by anti-amplification.
    pub amplification_held_bytes: u64,
    /// Closing connections given up because their peer acknowledged nothing
    /// for the stall limit.
    pub stalled_closes: usize,
    /// Connects ignored as late duplicates of an ended connection.
    pub late_duplicates: usize,
    /// Repeated Connects answered with the same Ack.
    pub duplicate_connects: usize,
    pub restarts: usize,
    /// Reconnect attempts.
    pub reconnects: usize,
    /// Reconnects that connected (`Reconnected` outputs).
    pub reconnected: usize,
    /// Closes issued while reconnecting.
    pub closes_while_reconnecting: usize,
    /// Client connections that took another connection's id for theirs (a
    /// restarted client hearing its previous connection: a known hazard,
    /// see `a_restarted_client_on_the_same_address_loses_nothing_silently`
    /// in tests/cores.rs). They are exempt from the end-to-end checks.
    pub misadopted: usize,
    /// Messages those connections had acknowledged that were never delivered.
    pub silently_lost: usize,
    /// Damaged Data datagrams whose damage LSP's integrity rules cannot see
    /// (the 16-bit one's-complement checksum has blind spots: see
    /// `checksum_cannot_see_every_change` in tests/wire.rs).
    pub undetectable_damage: u64,
    /// Deliveries whose content is such an undetectable damage: exempt from
    /// the content check, but not from the order, count and once-only checks.
    pub damaged_deliveries: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Node {
    Server,
    Client(usize),
    Storm(usize),
}

struct Datagram {
    due: u64,
    order: u64,
    from: Node,
    to: Node,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Drained,
    Lost,
    /// Closed without draining: a close while connecting, or an abort.
    Aborted,
    /// The client process went away (a restart).
    Vanished,
}

/// The shadow of one connection, on either side: what the checks expect of it.
struct Shadow {
    name: String,
    /// The client's address (on both sides).
    addr: SocketAddr,
    isn: u64,
    /// The connection id (0 while a client is connecting).
    id: u32,
    /// Payloads written to this connection, in order.
    written: Vec<Vec<u8>>,
    /// Payloads the application received from it.
    delivered: usize,
    /// Sequence numbers received in order (delivered or, once closing, consumed).
    received: u64,
    /// Per unacknowledged sequence number: epoch of its last send, current back-off.
    sends: BTreeMap<u64, (u64, u32)>,
    data_since_tick: bool,
    /// Epochs since the connection last accepted a message (shadow of epochs_silent).
    silent: u32,
    /// A server connection heartbeats only once its peer spoke beyond Connect;
    /// until then it repeats the Connect's Ack in its first few epochs.
    heard: bool,
    reacks: u32,
    /// Epochs a client has spent connecting (it resends Connect in odd ones).
    connecting_epochs: u32,
    closing: bool,
    closed_before_reading_all: bool,
    end: Option<End>,
    retransmissions: u64,
    /// Client: it took the id of a connection that is not its own. Server:
    /// such a client talks to it.
    misadopted: bool,
    /// Server: `ServerEvent::Connected` was produced.
    app_connected: bool,
    /// Server: the application's last event (`Closed` or `Lost`) was produced.
    app_ended: bool,
    app_lost: bool,
    /// Client: the tick it took another connection's id.
    misadopted_at: u64,
    /// Server: epochs left to answer a challenge (a Connect with another ISN
    /// from its address); nothing is sent for it meanwhile.
    challenge: Option<u32>,
    /// Server: admission order (the oldest unvalidated one is evicted first).
    admitted_seq: u64,
    /// Server: bytes received from its address, and sent to it, while not
    /// validated (`heard`): at most `AMPLIFICATION_FACTOR` times as many out.
    bytes_in: u64,
    bytes_out: u64,
}

impl Shadow {
    fn new(name: String, addr: SocketAddr, isn: u64, id: u32, heard: bool) -> Shadow {
        Shadow {
            name,
            addr,
            isn,
            id,
            written: Vec::new(),
            delivered: 0,
            received: 0,
            sends: BTreeMap::new(),
            data_since_tick: false,
            silent: 0,
            heard,
            reacks: 0,
            connecting_epochs: 0,
            closing: false,
            closed_before_reading_all: false,
            end: None,
            retransmissions: 0,
            misadopted: false,
            app_connected: false,
            app_ended: false,
            app_lost: false,
            misadopted_at: 0,
            challenge: None,
            admitted_seq: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

/// One client process: its core, and what its application has seen.
struct Client {
    core: ClientCore,
    /// Its current connection's shadow, in `Sim::cconns`.
    conn: usize,
    generation: u32,
    /// Messages the application wrote (this generation).
    written: usize,
    /// The last state output.
    state: ConnState,
    closing: bool,
    close_tick: u64,
    /// Nothing more can happen to it.
    done: bool,
    drained: bool,
    lost_reported: bool,
    connect_result: bool,
    /// The lost connection a `Reconnected` must name.
    reconnect_old: Option<u32>,
    /// `Reconnected` was the last output (a `State` `Connected` must follow).
    reconnected_new: Option<u32>,
    /// The last output was this state (`ConnectResult` follows one).
    prev_state: Option<ConnState>,
    attempt: u32,
    /// Reconnects so far (this generation).
    reconnects: u32,
    restart_at: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    Epoch,
    Other,
}

/// What a Connect arriving at the server must do, by the table's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// The same ISN as the live connection there: the same Ack again
    /// (nothing while that connection is challenged).
    Duplicate(u32),
    /// The ISN of a connection from there that ended less than
    /// `epoch_limit` epochs ago: ignored.
    LateDuplicate,
    /// Another ISN from a live connection's address: challenges it (`true`),
    /// or changes nothing if it is challenged already (`false`).
    Challenge(u32, bool),
    /// Admitted, after evicting these unvalidated connections, oldest first.
    Admit(Vec<u32>),
    /// Refused (at the limit with none to evict, or closing); announced if
    /// first for the address this epoch.
    Refuse(bool),
}

/// What one server input produced.
#[derive(Default)]
struct ServerStep {
    sent: HashMap<u32, Sent>,
    /// Connection ends and admissions, in output order.
    changes: Vec<(u32, ConnState)>,
    refused: Vec<SocketAddr>,
    transmits: Vec<(SocketAddr, Message<'static>)>,
}

/// What one client input produced.
#[derive(Default)]
struct ClientStep {
    sent: Sent,
    /// The connection current before the input was lost in it.
    lost: bool,
    outputs: usize,
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
            let mut isn = u64::from(sim.rng.gen::<u32>());
            for _ in 0..sim.rng.gen_range(1..=3) {
                if sim.chance(20) {
                    isn = u64::from(sim.rng.gen::<u32>());
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
                    bytes,
                });
            }
        }
        sim
    }

    fn now(&self) -> Instant {
        self.base + TICK * self.tick as u32
    }

    /// A fresh client process at client `c`'s address, with its first
    /// connection's shadow.
    fn new_client_core(&mut self, c: usize, generation: u32) -> Client {
        let isn = u64::from(self.rng.gen::<u32>());
        let mut config = ClientConfig::new(self.p);
        config.coalesce_acks = self.sc.coalesce;
        config.reconnect = self.policy.clone();
        config.seed = self.rng.gen();
        let core = ClientCore::new(self.now(), SERVER_ADDR, isn, config);
        let conn = self.new_cconn(c, generation, isn, Vec::new());
        Client {
            core,
            conn,
            generation,
            written: 0,
            state: ConnState::Connecting,
            closing: false,
            close_tick: 0,
            done: false,
            drained: false,
            lost_reported: false,
            connect_result: false,
            reconnect_old: None,
            reconnected_new: None,
            prev_state: Some(ConnState::Connecting),
            attempt: 0,
            reconnects: 0,
            restart_at: None,
        }
    }

    fn new_cconn(&mut self, c: usize, generation: u32, isn: u64, written: Vec<Vec<u8>>) -> usize {
        let addr = client_addr(c);
        let mut shadow = Shadow::new(
            format!("client {c} (generation {generation}, isn {isn})"),
            addr,
            isn,
            0,
            true,
        );
        shadow.written = written;
        self.cconns.push(shadow);
        let index = self.cconns.len() - 1;
        self.cconn_by_key.insert((addr, isn), index);
        index
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

    /// A new client core's first output is its `Connecting` state; then its
    /// Connect goes out.
    fn first_outputs(&mut self, c: usize) {
        let now = self.now();
        let first = self.clients[c].core.poll_output();
        let expected = ClientOutput::State {
            conn_id: None,
            state: ConnState::Connecting,
            at: now,
        };
        if first != Some(expected) {
            self.fail(
                &format!("client {c}"),
                format!("first output {first:?}, not Connecting"),
            );
        }
        let step = self.client_pump(c, Input::Other);
        if !step.sent.connect {
            self.fail(&format!("client {c}"), "no Connect at once".into());
        }
    }

    fn partitioned(&self, a: Node, b: Node) -> bool {
        let involves_zero = a == Node::Client(0) || b == Node::Client(0);
        involves_zero
            && self
                .partition
                .is_some_and(|(s, e)| self.tick >= s && self.tick < e)
    }

    fn chance(&mut self, percent: u8) -> bool {
        percent > 0 && self.rng.gen_range(0..100u8) < percent
    }

    /// Puts a datagram on the simulated wire, through the faults.
    /// Whether `payload` is an undetectable damage of Data `sn` of
    /// connection `id` on its way to the server (`to_server`) or the client.
    fn damage_seen(&self, to_server: bool, id: u32, sn: u64, payload: &[u8]) -> bool {
        self.undetectable
            .get(&(to_server, id, sn))
            .is_some_and(|seen| seen.iter().any(|p| p == payload))
    }

    fn transmit(&mut self, from: Node, to: Node, msg: &Message<'_>) {
        if self.partitioned(from, to) || self.chance(self.sc.drop) {
            return;
        }
        let mut msg = msg.clone().into_owned();
        if msg.kind == MsgType::Data {
            let mut payload = msg.payload.to_vec();
            if !payload.is_empty() && self.chance(self.sc.shorten) {
                payload.truncate(self.rng.gen_range(0..payload.len()));
            }
            if self.chance(self.sc.lengthen) {
                let extra = self.rng.gen_range(1..5);
                payload.extend((0..extra).map(|_| self.rng.gen::<u8>()));
            }
            if !payload.is_empty() && self.chance(self.sc.corrupt) {
                let i = self.rng.gen_range(0..payload.len());
                payload[i] ^= 1 << self.rng.gen_range(0..8);
            }
            if let Some(seen) = undetectable_damage(&msg, &payload) {
                // The checksum cannot see this change: the receiver may deliver
                // it. That is LSP's limit, not a fault of the core.
                self.outcome.undetectable_damage += 1;
                self.undetectable
                    .entry((to == Node::Server, msg.conn_id, msg.seq_num))
                    .or_default()
                    .push(seen);
            }
            msg.payload = payload.into();
        }
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        let copies = if self.chance(self.sc.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut due = self.tick + 1;
            if self.chance(self.sc.delay) {
                due += self
                    .rng
                    .gen_range(0..=self.sc.max_delay_epochs * TICKS_PER_EPOCH);
            }
            let order = self.next_order + self.rng.gen_range(0..1000);
            self.next_order += 1;
            self.net.push(Datagram {
                due,
                order,
                from,
                to,
                bytes: bytes.clone(),
            });
        }
    }

    fn deliver_due(&mut self) {
        let tick = self.tick;
        let mut due: Vec<Datagram> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].due <= tick {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Random order within the tick: the network reorders freely.
        due.sort_by_key(|d| (d.due, d.order));
        let mut server_touched = false;
        let mut clients_touched = BTreeSet::new();
        for d in due {
            if self.partitioned(d.from, d.to) {
                continue;
            }
            let Ok(msg) = Message::decode(&d.bytes) else {
                self.fail("network", "our own encoding did not decode".into())
            };
            match (d.from, d.to) {
                (Node::Server, Node::Client(c)) => {
                    self.client_receive(c, msg);
                    clients_touched.insert(c);
                }
                (Node::Client(c), Node::Server) => {
                    self.server_receive(client_addr(c), msg);
                    server_touched = true;
                }
                (Node::Storm(j), Node::Server) => {
                    self.server_receive(storm_addr(j), msg);
                    server_touched = true;
                }
                _ => unreachable!(),
            }
        }
        // The end of a receive batch: owed CAcks go out.
        let now = self.now();
        if server_touched {
            self.server.end_batch(now);
            self.server_pump(Input::Other, &[]);
        }
        for c in clients_touched {
            self.clients[c].core.end_batch(now);
            self.client_pump(c, Input::Other);
        }
    }

    // ----- the server side -----

    /// What the table must do with a Connect from `from` carrying `isn`.
    fn decide(&mut self, from: SocketAddr, isn: u64) -> Decision {
        let live = self.live.get(&from).copied();
        if let Some(id) = live {
            if self.sconns[&id].isn == isn {
                return Decision::Duplicate(id);
            }
        }
        let remembered = self
            .ended_at
            .get(&(from, isn))
            .is_some_and(|&at| self.epochs_done - at < u64::from(self.p.epoch_limit));
        if remembered {
            return Decision::LateDuplicate;
        }
        if self.server_closing {
            let announce = self.refused_now.insert(from);
            return Decision::Refuse(announce);
        }
        if let Some(id) = live {
            // Never trusted to replace it (RFC 5961): a challenge.
            return Decision::Challenge(id, self.sconns[&id].challenge.is_none());
        }
        // Unvalidated connections make way, oldest first.
        let max = self.server.config().max_connections;
        let max_unvalidated = self.server.config().max_unvalidated;
        let mut unvalidated: Vec<(u64, u32)> = self
            .live
            .values()
            .map(|id| &self.sconns[id])
            .filter(|t| !t.heard)
            .map(|t| (t.admitted_seq, t.id))
            .collect();
        unvalidated.sort_unstable();
        let mut size = self.live.len();
        let mut evicted = Vec::new();
        let mut oldest = unvalidated.iter();
        while size >= max || unvalidated.len() - evicted.len() >= max_unvalidated {
            let Some(&(_, id)) = oldest.next() else {
                break;
            };
            evicted.push(id);
            size -= 1;
        }
        if size >= max || unvalidated.len() - evicted.len() >= max_unvalidated {
            let announce = self.refused_now.insert(from);
            return Decision::Refuse(announce);
        }
        Decision::Admit(evicted)
    }

    fn server_receive(&mut self, from: SocketAddr, msg: Message<'_>) {
        let now = self.now();
        let mut encoded = Vec::new();
        msg.encode(&mut encoded);
        let len = encoded.len() as u64;
        self.incoming_len = len;
        // Whatever comes from a connection's address is credit for what
        // the server may send it before it is validated.
        if let Some(&id) = self.live.get(&from) {
            let t = self.sconns.get_mut(&id).expect("live");
            t.bytes_in = t.bytes_in.saturating_add(len);
        }
        if msg.kind == MsgType::Connect {
            let decision = self.decide(from, msg.seq_num);
            if let Decision::Duplicate(id) = decision {
                // A repeated Connect is accepted: it resets the silence.
                self.sconns.get_mut(&id).expect("live").silent = 0;
            }
            self.evicting = match &decision {
                Decision::Admit(evicted) => evicted.clone(),
                _ => Vec::new(),
            };
            self.server.handle_message(now, from, msg.clone());
            let step = self.server_pump(Input::Other, &[]);
            self.evicting.clear();
            self.check_decision(from, msg.seq_num, decision, &step);
            return;
        }
        // Routed to the connection at `from` (by the shadow table) if it
        // names it.
        let routed = self
            .live
            .get(&from)
            .copied()
            .filter(|&id| id == msg.conn_id);
        let rejected =
            |sim: &Sim, id: u32| sim.server.stats(now, ConnId::from(id)).map(|s| s.rejected);
        let before = routed.and_then(|id| rejected(self, id));
        // Anything but a Connect carrying its id from its address, even a
        // damaged one, shows the peer receives what the server sends: it
        // validates the connection and answers a challenge, before the
        // message is handled.
        if let Some(id) = routed {
            let s = self.sconns.get_mut(&id).expect("routed");
            s.heard = true;
            if s.challenge.take().is_some() {
                self.outcome.challenges_answered += 1;
            }
        }
        self.server.handle_message(now, from, msg);
        if let Some(id) = routed {
            let after = rejected(self, id);
            let s = self
                .sconns
                .get_mut(&id)
                .expect("routed to a known connection");
            // Accepted: nothing rejected (or it drained on this ack and left).
            if after.is_none() || after == before {
                s.silent = 0;
            }
        }
        self.server_pump(Input::Other, &routed.into_iter().collect::<Vec<_>>());
    }

    fn check_decision(
        &mut self,
        from: SocketAddr,
        isn: u64,
        decision: Decision,
        step: &ServerStep,
    ) {
        let decision_text = format!("{decision:?}");
        let admitted: Vec<u32> = step
            .changes
            .iter()
            .filter(|(_, s)| *s == ConnState::Connected)
            .map(|&(id, _)| id)
            .collect();
        let ended: Vec<u32> = step
            .changes
            .iter()
            .filter(|(_, s)| *s != ConnState::Connected)
            .map(|&(id, _)| id)
            .collect();
        let evicted = match &decision {
            Decision::Admit(evicted) => evicted.clone(),
            _ => Vec::new(),
        };
        let mut problem = None;
        // Evicted ones end Lost, oldest first, before the admission.
        let expected_ends: Vec<(u32, ConnState)> =
            evicted.iter().map(|&id| (id, ConnState::Lost)).collect();
        if ended != evicted
            || step.changes[..ended.len().min(step.changes.len())] != expected_ends[..]
        {
            problem = Some(format!("ended {:?}", step.changes));
        }
        self.outcome.evicted += evicted.len();
        match decision {
            Decision::Duplicate(id) => {
                self.outcome.duplicate_connects += 1;
                // A challenged connection sends nothing, not even this.
                let ack = if self.sconns[&id].challenge.is_some() {
                    vec![]
                } else {
                    vec![(from, Message::ack(id, isn))]
                };
                if !admitted.is_empty() || !step.refused.is_empty() || step.transmits != ack {
                    problem = Some(format!("sent {:?}", step.transmits));
                }
            }
            Decision::LateDuplicate => {
                self.outcome.late_duplicates += 1;
                if !admitted.is_empty() || !step.refused.is_empty() || !step.transmits.is_empty() {
                    problem = Some("a late duplicate Connect had an effect".into());
                }
            }
            Decision::Challenge(id, new) => {
                if !admitted.is_empty() || !step.refused.is_empty() || !step.transmits.is_empty() {
                    problem = Some(format!(
                        "admitted {admitted:?}, refused {:?}, sent {:?}",
                        step.refused, step.transmits
                    ));
                }
                if new {
                    self.outcome.challenged += 1;
                    self.sconns.get_mut(&id).expect("live").challenge = Some(CHALLENGE_EPOCHS);
                }
            }
            Decision::Admit(_) => {
                let ok = admitted.len() == 1
                    && step.refused.is_empty()
                    && step.transmits == [(from, Message::ack(admitted[0], isn))];
                if !ok {
                    problem = Some(format!(
                        "admitted {admitted:?}, refused {:?}, sent {:?}",
                        step.refused, step.transmits
                    ));
                }
            }
            Decision::Refuse(announce) => {
                let expected: Vec<SocketAddr> = announce.then_some(from).into_iter().collect();
                if !admitted.is_empty() || step.refused != expected {
                    problem = Some(format!("admitted {admitted:?}, refused {:?}", step.refused));
                }
                if step.transmits.iter().any(|(to, _)| *to == from) {
                    problem = Some("a refused Connect was answered".into());
                }
            }
        }
        if let Some(p) = problem {
            self.fail(
                "server table",
                format!("Connect {isn} from {from}: expected {decision_text}, but {p}"),
            );
        }
    }

    /// Drains the server's outputs and datagrams after an input, checking
    /// each, and puts the datagrams on the wire. `touched` are connections
    /// whose limits to check besides those that sent.
    fn server_pump(&mut self, input: Input, touched: &[u32]) -> ServerStep {
        let mut step = ServerStep::default();
        let mut reads: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        self.server_input = input;
        while let Some(output) = self.server.poll_output() {
            self.server_output(output, &mut step, &mut reads);
        }
        while let Some((to, msg)) = self.server.poll_transmit() {
            step.transmits.push((to, msg.into_owned()));
        }
        let epoch = self.epochs_done;
        let w = u64::from(self.p.window_size);
        let m = self.p.max_unacked_messages as usize;
        let mut violations = Vec::new();
        for (to, msg) in &step.transmits {
            let id = msg.conn_id;
            let Some(s) = self.sconns.get_mut(&id) else {
                self.fail("server", format!("sent {msg:?} for an unknown connection"));
            };
            if s.addr != *to {
                violations.push((id, format!("sent {msg:?} to {to}, not its peer")));
            }
            if s.challenge.is_some() {
                violations.push((id, format!("sent {msg:?} while challenged")));
            }
            if !s.heard {
                let mut bytes = Vec::new();
                msg.encode(&mut bytes);
                s.bytes_out += bytes.len() as u64;
                if s.bytes_out > AMPLIFICATION_FACTOR * s.bytes_in {
                    violations.push((
                        id,
                        format!(
                            "sent {} bytes to an unvalidated address that sent {}",
                            s.bytes_out, s.bytes_in
                        ),
                    ));
                }
            }
            let sent = step.sent.entry(id).or_default();
            if msg.kind == MsgType::Ack && msg.seq_num == s.isn {
                sent.isn_ack = true;
            }
            match msg.kind {
                MsgType::Data => {
                    let Some(conn) = self.server.conn(ConnId::from(id)) else {
                        violations.push((id, "Data after the connection ended".into()));
                        continue;
                    };
                    let oldest = conn.oldest_unacked();
                    if msg.seq_num > oldest + w - 1 {
                        violations.push((
                            id,
                            format!(
                                "sent {} beyond the window (oldest unacked {oldest})",
                                msg.seq_num
                            ),
                        ));
                    }
                    sent.data.push(msg.seq_num);
                    s.data_since_tick = true;
                    if input == Input::Other && s.sends.insert(msg.seq_num, (epoch, 0)).is_some() {
                        violations.push((
                            id,
                            format!("{} sent again outside an epoch tick", msg.seq_num),
                        ));
                    }
                }
                MsgType::Ack if msg.seq_num == 0 => sent.heartbeat = true,
                _ => {}
            }
        }
        let mut check: BTreeSet<u32> = step.sent.keys().copied().collect();
        check.extend(touched.iter().copied());
        check.extend(self.live.values().copied());
        for id in check {
            let Some(conn) = self.server.conn(ConnId::from(id)) else {
                continue;
            };
            if conn.unacked() > m {
                violations.push((id, format!("{} unacknowledged, max {m}", conn.unacked())));
            }
            // At most W - 1 can wait: the next expected one is delivered, not buffered.
            if conn.buffered() > (w as usize).saturating_sub(1) {
                violations.push((id, format!("{} buffered, window {w}", conn.buffered())));
            }
            if conn.phase() == Phase::Closing && conn.is_idle() {
                violations.push((
                    id,
                    "closing, everything acknowledged, but not drained".into(),
                ));
            }
            let received = conn.next_expected() - conn.isn() - 1;
            let in_flight: Vec<u64> = conn.in_flight().collect();
            if let Some(s) = self.sconns.get_mut(&id) {
                s.received = received;
                // Sent by the connection but held back on the way out (by
                // anti-amplification, or a challenge): on its back-off
                // schedule all the same.
                for sn in in_flight {
                    if let std::collections::btree_map::Entry::Vacant(e) = s.sends.entry(sn) {
                        if s.heard && s.challenge.is_none() && input == Input::Other {
                            violations.push((id, format!("{sn} in flight but never sent")));
                        }
                        e.insert((epoch, 0));
                        s.data_since_tick = true;
                    }
                }
            }
        }
        if let Some((id, v)) = violations.into_iter().next() {
            let name = self.sconns[&id].name.clone();
            self.fail(&name, v);
        }
        let active = self.server.totals().active;
        if active != self.live.len() || self.live.len() > self.server.config().max_connections {
            self.fail(
                "server table",
                format!(
                    "{active} connections in the table, {} live by its outputs, max {}",
                    self.live.len(),
                    self.server.config().max_connections
                ),
            );
        }
        if self.server_closing && self.live.is_empty() && !self.server_drained {
            self.fail(
                "server",
                "closing, every connection ended, but no Drained".into(),
            );
        }
        for (to, msg) in &step.transmits {
            // What goes to a storm address goes nowhere.
            if let Node::Client(c) = node_of(*to) {
                self.transmit(Node::Server, Node::Client(c), msg);
            }
        }
        let now = self.now();
        for (id, (n, bytes)) in reads {
            if self.server.conn(ConnId::from(id)).is_some() {
                self.server.read_done(now, ConnId::from(id), n, bytes);
                self.server_pump(Input::Other, &[id]);
            }
        }
        step
    }

    fn server_output(
        &mut self,
        output: ServerOutput,
        step: &mut ServerStep,
        reads: &mut BTreeMap<u32, (usize, usize)>,
    ) {
        let now = self.now();
        let fail = |sim: &Sim, what: String| -> ! {
            sim.fail("server output", format!("{output:?}: {what}"))
        };
        match &output {
            ServerOutput::State {
                conn_id: None,
                peer,
                state,
                at,
            } => {
                if *state != ConnState::Refused || *at != now {
                    fail(self, "only a refusal names no connection".into());
                }
                self.outcome.refused += 1;
                step.refused.push(*peer);
            }
            ServerOutput::State {
                conn_id: Some(cid),
                peer,
                state,
                at,
            } => {
                let id = u32::from(*cid);
                if *at != now {
                    fail(self, "stamped with another time".into());
                }
                if *state == ConnState::Connected {
                    if self.sconns.contains_key(&id) {
                        fail(self, "an id used twice".into());
                    }
                    if self.live.contains_key(peer) {
                        fail(self, "a second live connection at one address".into());
                    }
                    let Some(conn) = self.server.conn(*cid) else {
                        fail(self, "announced but not in the table".into());
                    };
                    let isn = conn.isn();
                    if let Some(&at) = self.ended_at.get(&(*peer, isn)) {
                        if self.epochs_done - at < u64::from(self.p.epoch_limit) {
                            fail(self, "a late duplicate Connect created a connection".into());
                        }
                    }
                    let mut shadow = Shadow::new(
                        format!("server conn {id} ({peer}, isn {isn})"),
                        *peer,
                        isn,
                        id,
                        false,
                    );
                    self.admissions += 1;
                    shadow.admitted_seq = self.admissions;
                    // Its Connect is all the address has sent it so far.
                    shadow.bytes_in = self.incoming_len;
                    self.sconns.insert(id, shadow);
                    self.live.insert(*peer, id);
                    self.outcome.admitted += 1;
                    step.changes.push((id, ConnState::Connected));
                    return;
                }
                let Some(s) = self.sconns.get(&id) else {
                    fail(self, "for an unknown connection".into());
                };
                if s.end.is_some() {
                    fail(self, "after the connection's terminal state".into());
                }
                if !s.app_connected || s.addr != *peer {
                    fail(
                        self,
                        "before its Connected event, or with another peer".into(),
                    );
                }
                match state {
                    ConnState::Closing => {
                        if !s.closing {
                            fail(self, "closing without a close".into());
                        }
                    }
                    ConnState::Closed | ConnState::Lost => {
                        self.server_conn_ended(id, *state, &output);
                        step.changes.push((id, *state));
                    }
                    _ => fail(self, "not a server connection's state".into()),
                }
            }
            ServerOutput::App(event) => {
                let id = match event {
                    ServerEvent::Connected { id, .. }
                    | ServerEvent::Message { id, .. }
                    | ServerEvent::Closed { id }
                    | ServerEvent::Lost { id } => u32::from(*id),
                    _ => fail(self, "an unknown event".into()),
                };
                let Some(s) = self.sconns.get(&id) else {
                    fail(self, "for an unknown connection".into());
                };
                if s.end.is_some() || s.app_ended {
                    fail(self, "after the connection's last event".into());
                }
                if !s.app_connected && !matches!(event, ServerEvent::Connected { .. }) {
                    fail(self, "before its Connected event".into());
                }
                match event {
                    ServerEvent::Connected { peer, .. } => {
                        if s.app_connected || s.addr != *peer {
                            fail(self, "twice, or with another peer".into());
                        }
                        self.sconns.get_mut(&id).expect("known").app_connected = true;
                    }
                    ServerEvent::Message { payload, .. } => {
                        if s.closing {
                            fail(self, "delivered after close".into());
                        }
                        let i = s.delivered;
                        let expected = self
                            .cconn_by_key
                            .get(&(s.addr, s.isn))
                            .and_then(|&c| self.cconns[c].written.get(i));
                        // Both ends number from the client's isn + 1.
                        let sn = s.isn + 1 + i as u64;
                        let damaged = expected.is_some() && self.damage_seen(true, id, sn, payload);
                        if damaged {
                            self.outcome.damaged_deliveries += 1;
                        } else if expected != Some(payload) && !s.misadopted {
                            let name = s.name.clone();
                            self.fail(
                                &name,
                                format!("delivery {i} is not the peer's message {i} (gap, duplicate or reorder)"),
                            );
                        }
                        self.sconns.get_mut(&id).expect("known").delivered += 1;
                        let r = reads.entry(id).or_default();
                        r.0 += 1;
                        r.1 += payload.len();
                    }
                    ServerEvent::Closed { .. } => {
                        if self.closing_conn != Some(id) {
                            fail(self, "without close_conn".into());
                        }
                        self.sconns.get_mut(&id).expect("known").app_ended = true;
                    }
                    ServerEvent::Lost { .. } => {
                        if s.closing {
                            fail(self, "reported lost after the application closed it".into());
                        }
                        let s = self.sconns.get_mut(&id).expect("known");
                        s.app_ended = true;
                        s.app_lost = true;
                    }
                    _ => unreachable!(),
                }
            }
            ServerOutput::Discard { id } => {
                if self.closing_conn != Some(u32::from(*id)) {
                    fail(self, "a discard without close_conn".into());
                }
            }
            ServerOutput::Drained => {
                if !self.server_closing || self.server_drained || !self.live.is_empty() {
                    fail(
                        self,
                        "without close, twice, or before every connection ended".into(),
                    );
                }
                self.server_drained = true;
            }
            _ => fail(self, "an unknown output".into()),
        }
    }

    /// Connection `id` reported its terminal state.
    fn server_conn_ended(&mut self, id: u32, state: ConnState, output: &ServerOutput) {
        let limit = self.p.epoch_limit;
        let s = &self.sconns[&id];
        let mut problem = None;
        if state == ConnState::Closed {
            if !s.closing {
                problem = Some("closed without closing".to_string());
            }
            // Drained: its peer acknowledged, so received, every message.
            let peer = self
                .cconn_by_key
                .get(&(s.addr, s.isn))
                .map(|&c| &self.cconns[c]);
            if let Some(peer) = peer {
                if !s.misadopted && !peer.misadopted && peer.received < s.written.len() as u64 {
                    problem = Some(format!(
                        "drained with messages unacknowledged: wrote {}, the peer received {}",
                        s.written.len(),
                        peer.received
                    ));
                }
            } else if !s.written.is_empty() {
                problem = Some("drained, but nobody could acknowledge its messages".into());
            }
        } else {
            // Lost: evicted unvalidated to admit a Connect (the decision
            // check confirms it), or in an epoch: by silence, an unanswered
            // challenge, or a close its peer stalled.
            let epoch = self.server_input == Input::Epoch;
            let by_silence = epoch && s.silent >= limit;
            let by_challenge = epoch && self.challenge_expiring.contains(&id);
            let by_stall = epoch && self.stall_expiring.contains(&id);
            if !self.evicting.contains(&id) && !by_silence && !by_challenge && !by_stall {
                problem = Some(format!(
                    "lost after only {} silent epochs (challenge {:?})",
                    s.silent, s.challenge
                ));
            }
            if !s.closing && !s.app_lost {
                problem = Some("lost with no Lost event first".into());
            }
        }
        if self.server.conn(ConnId::from(id)).is_some()
            || self.server.conn_at(s.addr) == Some(ConnId::from(id))
        {
            problem = Some("ended but still in the table".into());
        }
        if let Some(p) = problem {
            self.fail(&s.name.clone(), format!("{output:?}: {p}"));
        }
        let s = self.sconns.get_mut(&id).expect("known");
        s.end = Some(if state == ConnState::Closed {
            End::Drained
        } else {
            End::Lost
        });
        let (addr, isn) = (s.addr, s.isn);
        if self.live.remove(&addr) != Some(id) {
            self.fail(
                "server table",
                format!("connection {id} was not live at {addr}"),
            );
        }
        self.ended_at.insert((addr, isn), self.epochs_done);
    }

    /// The server application: writes its messages to every connection,
    /// reads what arrives (in `server_output`), closes a connection once it
    /// has written everything and read everything (or early), and closes
    /// the server once every client is done.
    fn server_app(&mut self) {
        let now = self.now();
        let n = self.sc.messages;
        let mut ids: Vec<u32> = self.live.values().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let s = &self.sconns[&id];
            if s.end.is_some() || s.closing {
                continue;
            }
            if s.written.len() < n && self.rng.gen_bool(0.5) {
                let payload = self.next_payload();
                if let Err(e) = self.server.write(now, ConnId::from(id), &payload) {
                    self.fail(&self.sconns[&id].name.clone(), format!("write failed: {e}"));
                }
                self.sconns
                    .get_mut(&id)
                    .expect("live")
                    .written
                    .push(payload);
                self.server_pump(Input::Other, &[id]);
            }
            let s = &self.sconns[&id];
            if s.end.is_none() && s.written.len() == n {
                let read_all = s.delivered == n;
                let early = !read_all && self.chance(self.sc.early_close);
                if read_all || early {
                    let s = self.sconns.get_mut(&id).expect("live");
                    s.closing = true;
                    s.closed_before_reading_all = !read_all;
                    self.closing_conn = Some(id);
                    if let Err(e) = self.server.close_conn(now, ConnId::from(id)) {
                        self.fail("server", format!("close_conn({id}) failed: {e}"));
                    }
                    self.server_pump(Input::Other, &[id]);
                    self.closing_conn = None;
                    if !self.sconns[&id].app_ended {
                        self.fail("server", format!("close_conn({id}) gave no Closed event"));
                    }
                }
            }
        }
        if !self.server_closing && self.clients.iter().all(|c| c.done) {
            self.server_closing = true;
            for s in self.sconns.values_mut() {
                if s.end.is_none() {
                    s.closing = true;
                }
            }
            self.server.close(now);
            self.server_pump(Input::Other, &[]);
        }
    }

    /// The table as the core reports it agrees with its outputs.
    fn check_table(&mut self) {
        // As many as its outputs say (checked after every input), and each
        // of them where they say.
        for (&addr, &id) in &self.live {
            if self.server.conn_at(addr) != Some(ConnId::from(id))
                || self.server.peer_addr(ConnId::from(id)) != Some(addr)
            {
                self.fail("server table", format!("{addr} does not map to {id}"));
            }
        }
    }

    // ----- the client side -----

    fn client_receive(&mut self, c: usize, msg: Message<'_>) {
        let now = self.now();
        let before = self.clients[c].core.stats(now).rejected;
        self.clients[c].core.handle_message(now, SERVER_ADDR, msg);
        let after = self.clients[c].core.stats(now).rejected;
        let conn = self.clients[c].conn;
        if after == before && self.cconns[conn].end.is_none() {
            self.cconns[conn].silent = 0;
        }
        self.client_pump(c, Input::Other);
    }

    fn client_timeouts(&mut self) {
        let now = self.now();
        for c in 0..self.clients.len() {
            if self.clients[c]
                .core
                .poll_timeout()
                .is_some_and(|at| at <= now)
            {
                self.clients[c].core.handle_timeout(now);
                let step = self.client_pump(c, Input::Other);
                if !step.sent.connect {
                    self.fail(&format!("client {c}"), "redialled without a Connect".into());
                }
            }
        }
    }

    /// Drains a client's outputs and datagrams after an input, checking each,
    /// and puts the datagrams on the wire.
    fn client_pump(&mut self, c: usize, input: Input) -> ClientStep {
        let mut step = ClientStep::default();
        let before = self.clients[c].conn;
        let mut reads = (0, 0);
        // Outputs of one input come together: the end (`Closed`, `Refused`)
        // may be followed by `Drained` or `ConnectResult` in the same batch.
        let was_done = self.clients[c].done;
        while let Some(output) = self.clients[c].core.poll_output() {
            step.outputs += 1;
            if was_done {
                self.fail(&format!("client {c}"), format!("{output:?} after its end"));
            }
            self.client_output(c, output, input, &mut reads);
        }
        step.lost = self.cconns[before].end == Some(End::Lost);
        let mut out = Vec::new();
        while let Some((to, msg)) = self.clients[c].core.poll_transmit() {
            if to != SERVER_ADDR {
                self.fail(&format!("client {c}"), format!("sent to {to}"));
            }
            out.push(msg.into_owned());
        }
        let epoch = self.epochs_done;
        let w = u64::from(self.p.window_size);
        let m = self.p.max_unacked_messages as usize;
        let index = self.clients[c].conn;
        let conn = self.clients[c].core.conn();
        let oldest = conn.oldest_unacked();
        let mut violations = Vec::new();
        let t = &mut self.cconns[index];
        for msg in &out {
            match msg.kind {
                MsgType::Data => {
                    if msg.seq_num > oldest + w - 1 {
                        violations.push(format!(
                            "sent {} beyond the window (oldest unacked {oldest})",
                            msg.seq_num
                        ));
                    }
                    step.sent.data.push(msg.seq_num);
                    t.data_since_tick = true;
                    if input == Input::Other && t.sends.insert(msg.seq_num, (epoch, 0)).is_some() {
                        violations
                            .push(format!("{} sent again outside an epoch tick", msg.seq_num));
                    }
                }
                MsgType::Ack if msg.seq_num == 0 => step.sent.heartbeat = true,
                MsgType::Connect => {
                    step.sent.connect = true;
                    if msg.seq_num != t.isn {
                        violations.push(format!("Connect with isn {}", msg.seq_num));
                    }
                }
                _ => {}
            }
        }
        if conn.unacked() > m {
            violations.push(format!("{} unacknowledged, max {m}", conn.unacked()));
        }
        if conn.buffered() > (w as usize).saturating_sub(1) {
            violations.push(format!("{} buffered, window {w}", conn.buffered()));
        }
        if conn.phase() == Phase::Closing && conn.is_idle() {
            violations.push("closing, everything acknowledged, but not drained".into());
        }
        if t.end.is_some_and(|e| e != End::Vanished) && (!conn.is_idle() || conn.buffered() != 0) {
            violations.push("state left behind after the connection ended".into());
        }
        if conn.isn() == t.isn {
            t.received = conn.next_expected() - conn.isn() - 1;
        }
        if let Some(v) = violations.into_iter().next() {
            let name = t.name.clone();
            self.fail(&name, v);
        }
        for msg in &out {
            self.transmit(Node::Client(c), Node::Server, msg);
        }
        if reads.0 > 0 {
            let now = self.now();
            self.clients[c].core.read_done(now, reads.0, reads.1);
            self.client_pump(c, Input::Other);
        }
        step
    }

    fn client_output(
        &mut self,
        c: usize,
        output: ClientOutput,
        input: Input,
        reads: &mut (usize, usize),
    ) {
        let now = self.now();
        let limit = self.p.epoch_limit;
        let who = format!("client {c} (generation {})", self.clients[c].generation);
        let fail = |sim: &Sim, what: String| -> ! { sim.fail(&who, format!("{output:?}: {what}")) };
        let cl = &self.clients[c];
        let index = cl.conn;
        if cl.reconnected_new.is_some()
            && !matches!(
                output,
                ClientOutput::State {
                    state: ConnState::Connected,
                    ..
                }
            )
        {
            fail(self, "Reconnected not followed by Connected".into());
        }
        let prev_state = self.clients[c].prev_state.take();
        match &output {
            ClientOutput::State { conn_id, state, at } => {
                if *at != now {
                    fail(self, "stamped with another time".into());
                }
                let from = self.clients[c].state;
                let allowed = match (from, state) {
                    (
                        ConnState::Connecting,
                        ConnState::Connected | ConnState::Refused | ConnState::Closed,
                    ) => true,
                    (ConnState::Connected, ConnState::Closing | ConnState::Lost) => true,
                    // Only an abort skips Closing.
                    (ConnState::Connected, ConnState::Closed) => self.aborting,
                    (ConnState::Closing, ConnState::Closed | ConnState::Lost) => true,
                    (ConnState::Lost, ConnState::Reconnecting { .. } | ConnState::Refused) => {
                        self.policy.is_some()
                    }
                    (
                        ConnState::Reconnecting { .. },
                        ConnState::Connected
                        | ConnState::Reconnecting { .. }
                        | ConnState::Refused
                        | ConnState::Closed,
                    ) => true,
                    _ => false,
                };
                if !allowed {
                    fail(self, format!("{from:?} cannot become {state:?}"));
                }
                let mut ended_by_silence = false;
                match state {
                    ConnState::Connected => {
                        let Some(cid) = conn_id else {
                            fail(self, "connected without an id".into());
                        };
                        let id = u32::from(*cid);
                        if let Some(old) = self.clients[c].reconnect_old {
                            if self.clients[c].reconnected_new != Some(id) {
                                fail(self, format!("after a loss of {old}, no Reconnected first"));
                            }
                        }
                        let cl = &mut self.clients[c];
                        cl.reconnect_old = None;
                        cl.reconnected_new = None;
                        let t = &mut self.cconns[index];
                        t.id = id;
                        t.silent = 0;
                        let (addr, isn) = (t.addr, t.isn);
                        let owner = self.sconns.get_mut(&id);
                        let Some(owner) = owner else {
                            fail(self, "an id the server never gave".into());
                        };
                        if owner.addr != addr {
                            let other = owner.addr;
                            fail(self, format!("the id of a connection of {other}"));
                        }
                        if owner.isn != isn {
                            // A previous process's connection at this address
                            // answered first: the known hazard.
                            owner.misadopted = true;
                            let t = &mut self.cconns[index];
                            t.misadopted = true;
                            t.misadopted_at = self.tick;
                            self.outcome.misadopted += 1;
                        }
                    }
                    ConnState::Closing => {
                        if !self.clients[c].closing {
                            fail(self, "closing without a close".into());
                        }
                    }
                    ConnState::Closed => {
                        let t = &self.cconns[index];
                        if from == ConnState::Closing && !self.aborting {
                            // Drained: the server received everything.
                            let peer = self.sconns.get(&t.id).filter(|s| s.isn == t.isn);
                            let received = peer.map_or(0, |s| s.received);
                            if !t.misadopted && received < t.written.len() as u64 {
                                fail(self, format!("drained with messages unacknowledged: wrote {}, the server received {received}", t.written.len()));
                            }
                            self.cconns[index].end = Some(End::Drained);
                            if self.clients[c].core.close_result().is_err() {
                                fail(self, "drained, but the close reports a loss".into());
                            }
                        } else {
                            if !self.clients[c].closing && !self.aborting {
                                fail(self, "closed without a close".into());
                            }
                            self.cconns[index].end = Some(End::Aborted);
                        }
                    }
                    ConnState::Lost | ConnState::Refused | ConnState::Reconnecting { .. } => {
                        if self.cconns[index].end.is_none() {
                            ended_by_silence = true;
                        }
                    }
                    _ => fail(self, "not a client state".into()),
                }
                if ended_by_silence {
                    let t = &mut self.cconns[index];
                    let stalled = self.client_stalling == Some(index);
                    if input != Input::Epoch || (t.silent < limit && !stalled) {
                        let silent = t.silent;
                        fail(self, format!("lost after only {silent} silent epochs"));
                    }
                    t.end = Some(End::Lost);
                    if *state == ConnState::Lost {
                        if *conn_id != Some(ConnId::from(t.id)) {
                            fail(self, "names another connection".into());
                        }
                        if self.policy.is_some() && !self.clients[c].closing {
                            self.clients[c].reconnect_old = Some(t.id);
                        }
                    }
                }
                if let ConnState::Reconnecting { attempt } = *state {
                    self.reconnecting(c, attempt, from, &output);
                }
                if *state == ConnState::Refused {
                    if let ConnState::Reconnecting { attempt } = from {
                        let max = self.policy.as_ref().and_then(|p| p.max_attempts);
                        if max != Some(attempt) {
                            fail(self, "gave up before max_attempts".into());
                        }
                    }
                }
                let cl = &mut self.clients[c];
                cl.state = *state;
                cl.prev_state = Some(*state);
                if matches!(state, ConnState::Closed | ConnState::Refused) {
                    cl.done = true;
                }
            }
            ClientOutput::ConnectResult(result) => {
                let cl = &self.clients[c];
                let ok = match result {
                    Ok(id) => {
                        prev_state == Some(ConnState::Connected)
                            && u32::from(*id) == self.cconns[index].id
                    }
                    Err(_) => prev_state == Some(ConnState::Refused),
                };
                if cl.connect_result || !ok {
                    fail(
                        self,
                        "twice, or not right after Connected or Refused".into(),
                    );
                }
                self.clients[c].connect_result = true;
            }
            ClientOutput::Data(payload) => {
                let t = &self.cconns[index];
                if self.clients[c].closing || t.end.is_some() || t.id == 0 {
                    fail(self, "delivered while not connected, or after close".into());
                }
                let i = t.delivered;
                let expected = self
                    .sconns
                    .get(&t.id)
                    .filter(|s| s.isn == t.isn && s.addr == t.addr)
                    .and_then(|s| s.written.get(i));
                let sn = t.isn + 1 + i as u64;
                let damaged = expected.is_some() && self.damage_seen(false, t.id, sn, payload);
                if damaged {
                    self.outcome.damaged_deliveries += 1;
                } else if expected != Some(payload) {
                    let name = t.name.clone();
                    self.fail(
                        &name,
                        format!("delivery {i} is not the peer's message {i} (gap, duplicate or reorder)"),
                    );
                }
                self.cconns[index].delivered += 1;
                reads.0 += 1;
                reads.1 += payload.len();
            }
            ClientOutput::Lost(id) => {
                let cl = &self.clients[c];
                let expected = cl.reconnect_old.unwrap_or(self.cconns[index].id);
                let gave_up = matches!(cl.state, ConnState::Reconnecting { .. });
                if cl.lost_reported
                    || u32::from(*id) != expected
                    || !(cl.state == ConnState::Lost || gave_up)
                {
                    fail(self, format!("expected one Lost({expected}) after a loss"));
                }
                // Without a policy it is the end; with one, `Refused` follows
                // (gave up), and `Drained` if closing.
                let policy = self.policy.is_some();
                let cl = &mut self.clients[c];
                cl.lost_reported = true;
                cl.reconnect_old = None;
                if !cl.closing && !policy {
                    cl.done = true;
                }
            }
            ClientOutput::Reconnected { old, new } => {
                let cl = &self.clients[c];
                if cl.reconnect_old != Some(u32::from(*old)) {
                    fail(
                        self,
                        format!("the lost connection was {:?}", cl.reconnect_old),
                    );
                }
                self.clients[c].reconnected_new = Some(u32::from(*new));
                self.outcome.reconnected += 1;
            }
            ClientOutput::Drained => {
                let cl = &mut self.clients[c];
                if !cl.closing || cl.drained {
                    fail(self, "without close, or twice".into());
                }
                cl.drained = true;
                cl.done = true;
            }
            _ => fail(self, "an unknown output".into()),
        }
    }

    /// A `Reconnecting` state: the lost connection's unacknowledged
    /// messages go to a new one, dialled after a delay from the policy.
    fn reconnecting(&mut self, c: usize, attempt: u32, from: ConnState, output: &ClientOutput) {
        let now = self.now();
        let who = format!("client {c}");
        let Some(policy) = &self.policy else {
            self.fail(&who, "reconnecting without a policy".into());
        };
        let cl = &self.clients[c];
        let counted = match from {
            ConnState::Lost => attempt == 1 || attempt == cl.attempt + 1,
            ConnState::Reconnecting { attempt: a } => attempt == a + 1,
            _ => false,
        };
        if !counted || policy.max_attempts.is_some_and(|max| attempt > max) {
            self.fail(&who, format!("{output:?} after {from:?}"));
        }
        let Some(at) = cl.core.poll_timeout() else {
            self.fail(&who, format!("{output:?} with no redial scheduled"));
        };
        let (lo, hi) = policy.delays[(attempt as usize - 1).min(policy.delays.len() - 1)];
        let delay = at - now;
        if delay < lo || delay > hi {
            self.fail(
                &who,
                format!("redial in {delay:?}, outside {lo:?}..={hi:?}"),
            );
        }
        // What the lost connection never had acknowledged, in order.
        let old = &self.cconns[cl.conn];
        let Some((base, next_unsent, in_flight)) = self.pre_epoch.take() else {
            self.fail(&who, "reconnecting outside an epoch".into());
        };
        let carried: Vec<Vec<u8>> = old
            .written
            .iter()
            .enumerate()
            .filter(|&(i, _)| {
                let sn = old.isn + 1 + i as u64;
                let acked = sn < base || (sn < next_unsent && !in_flight.contains(&sn));
                !acked
            })
            .map(|(_, p)| p.clone())
            .collect();
        let generation = cl.generation;
        let isn = cl.core.conn().isn();
        let index = self.new_cconn(c, generation, isn, carried);
        let cl = &mut self.clients[c];
        cl.conn = index;
        cl.attempt = attempt;
        cl.reconnects += 1;
        self.outcome.reconnects += 1;
    }

    /// Clients that restart: the process goes away (its datagrams in flight
    /// still arrive), a fresh core with a new ISN takes its address.
    fn restarts(&mut self) {
        for c in 0..self.clients.len() {
            if self.clients[c].restart_at != Some(self.tick) || self.clients[c].done {
                continue;
            }
            let old = self.clients[c].conn;
            if self.cconns[old].end.is_none() {
                self.cconns[old].end = Some(End::Vanished);
            }
            let generation = self.clients[c].generation + 1;
            self.clients[c] = self.new_client_core(c, generation);
            self.outcome.restarts += 1;
            self.first_outputs(c);
        }
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
        let mut p: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
        // Make every payload unique, so a duplicate delivery cannot hide.
        p.extend_from_slice(&self.payload_counter.to_le_bytes());
        p
    }

    /// Expected resends of a connection at this epoch, by its back-off schedule.
    fn due_resends(t: &mut Shadow, in_flight: &BTreeSet<u64>, epoch: u64) -> BTreeSet<u64> {
        t.sends.retain(|sn, _| in_flight.contains(sn));
        t.sends
            .iter()
            .filter(|(_, &(last, backoff))| epoch - last > u64::from(backoff))
            .map(|(&sn, _)| sn)
            .collect()
    }

    /// Checks one connection's epoch: back-off, heartbeats, re-acks. What
    /// the connection sends may be `held` on its way out (its schedule runs
    /// all the same).
    #[allow(clippy::too_many_arguments)]
    fn check_epoch_sends(
        &mut self,
        t_is_server: bool,
        key: usize,
        heard: bool,
        held: Held,
        data_before: bool,
        expected: &BTreeSet<u64>,
        sent: &Sent,
    ) {
        let epoch = self.epochs_done;
        let cap = self.p.max_backoff_interval;
        let t = if t_is_server {
            self.sconns.get_mut(&(key as u32)).expect("known")
        } else {
            &mut self.cconns[key]
        };
        let mut problem = None;
        if !heard && t_is_server {
            let due = t.reacks < CONNECT_REACKS;
            t.reacks += 1;
            // Held back, a due re-send may be missing, never an undue one there.
            let wrong = match held {
                Held::No => sent.isn_ack != due,
                Held::Unvalidated | Held::Challenged => sent.isn_ack && !due,
            };
            if wrong {
                problem = Some(format!(
                    "re-sent the Connect's Ack = {}, expected {due}",
                    sent.isn_ack
                ));
            }
        }
        if held == Held::Challenged && *sent != Sent::default() {
            problem = Some(format!("sent {sent:?} while challenged"));
        }
        let resent: BTreeSet<u64> = sent.data.iter().copied().collect();
        let schedule_kept = match held {
            Held::No => resent == *expected,
            Held::Unvalidated | Held::Challenged => resent.is_subset(expected),
        };
        if !schedule_kept {
            problem = Some(format!(
                "resent {resent:?}, back-off schedule says {expected:?}"
            ));
        }
        t.retransmissions += resent.len() as u64;
        // Held back or not, the connection resent what was due.
        let due_now = if held == Held::No { &resent } else { expected };
        for sn in due_now {
            if let Some((last, backoff)) = t.sends.get_mut(sn) {
                *last = epoch;
                *backoff = if *backoff == 0 { 1 } else { *backoff * 2 }.min(cap);
            }
        }
        let data_this_epoch = data_before || !due_now.is_empty();
        t.data_since_tick = false;
        if heard && held == Held::No && sent.heartbeat == data_this_epoch {
            problem = Some(if sent.heartbeat {
                "heartbeat in an epoch with data".into()
            } else {
                "no heartbeat in an idle epoch".into()
            });
        }
        if !heard && sent.heartbeat {
            problem = Some("heartbeat before the peer said anything".into());
        }
        if let Some(p) = problem {
            let name = t.name.clone();
            self.fail(&name, p);
        }
    }

    /// One epoch for the server and every client, checking back-off,
    /// heartbeats, Connect resends and the exact epoch of loss.
    fn epoch_tick(&mut self) {
        self.epochs_done += 1;
        let epoch = self.epochs_done;
        let limit = self.p.epoch_limit;
        let now = self.now();
        self.refused_now.clear();

        // The server: every connection ticks in one call.
        let mut ids: Vec<u32> = self.live.values().copied().collect();
        ids.sort_unstable();
        let mut expectations = Vec::new();
        self.challenge_expiring.clear();
        self.stall_expiring.clear();
        for id in ids {
            // An epoch whose datagrams were held back does not count.
            let excused = self.server.held_back_this_epoch(ConnId::from(id));
            let conn = self.server.conn(ConnId::from(id)).expect("live");
            let in_flight: BTreeSet<u64> = conn.in_flight().collect();
            let stall_due = stall_due(&conn, excused);
            drop(conn);
            let t = self.sconns.get_mut(&id).expect("live");
            // An unanswered challenge ends it before it ticks; otherwise
            // one epoch less to answer.
            let challenge_ends = t.challenge == Some(1);
            t.challenge = t.challenge.map(|left| left - 1).filter(|&left| left > 0);
            t.silent += 1;
            let expected = Self::due_resends(t, &in_flight, epoch);
            let silent_out = t.silent >= limit;
            let stalled = !challenge_ends && !silent_out && stall_due;
            if challenge_ends {
                self.challenge_expiring.insert(id);
            }
            if stalled {
                self.stall_expiring.insert(id);
            }
            expectations.push((
                id,
                challenge_ends || silent_out || stalled,
                expected,
                t.heard,
                t.data_since_tick,
                t.challenge.is_some(),
            ));
        }
        self.server.handle_epoch(now);
        let touched: Vec<u32> = expectations.iter().map(|e| e.0).collect();
        let step = self.server_pump(Input::Epoch, &touched);
        for (id, expect_lost, expected, heard, data_before, challenged) in expectations {
            let lost_now = step.changes.contains(&(id, ConnState::Lost));
            if expect_lost != lost_now {
                let t = &self.sconns[&id];
                self.fail(
                    &t.name.clone(),
                    format!(
                        "silent for {} epochs (limit {limit}), challenge ending {}, stalled close {}, but lost = {lost_now}",
                        t.silent,
                        self.challenge_expiring.contains(&id),
                        self.stall_expiring.contains(&id),
                    ),
                );
            }
            if lost_now {
                if self.challenge_expiring.contains(&id) {
                    self.outcome.challenge_ends += 1;
                }
                if self.stall_expiring.contains(&id) {
                    self.outcome.stalled_closes += 1;
                }
                continue;
            }
            let sent = step.sent.get(&id).cloned().unwrap_or_default();
            let held = if challenged {
                Held::Challenged
            } else if !heard {
                Held::Unvalidated
            } else {
                Held::No
            };
            self.check_epoch_sends(
                true,
                id as usize,
                heard,
                held,
                data_before,
                &expected,
                &sent,
            );
        }

        // The clients.
        for c in 0..self.clients.len() {
            let index = self.clients[c].conn;
            let waiting = self.clients[c].core.poll_timeout().is_some();
            let conn = self.clients[c].core.conn();
            let ticking = !waiting && self.cconns[index].end.is_none() && !self.clients[c].done;
            let mut pre = None;
            if ticking {
                let in_flight: BTreeSet<u64> = conn.in_flight().collect();
                let connecting = conn.phase() == Phase::Connecting;
                let stalled = stall_due(conn, false);
                self.pre_epoch =
                    Some((conn.oldest_unacked(), conn.next_unsent(), in_flight.clone()));
                let t = &mut self.cconns[index];
                t.silent += 1;
                if connecting {
                    t.connecting_epochs += 1;
                }
                let expected = Self::due_resends(t, &in_flight, epoch);
                let silent_out = t.silent >= limit;
                if stalled && !silent_out {
                    self.outcome.stalled_closes += 1;
                    self.client_stalling = Some(index);
                }
                pre = Some((
                    silent_out || stalled,
                    expected,
                    connecting,
                    t.data_since_tick,
                ));
            }
            self.clients[c].core.handle_epoch(now);
            let step = self.client_pump(c, Input::Epoch);
            self.pre_epoch = None;
            self.client_stalling = None;
            let Some((expect_lost, expected, connecting, data_before)) = pre else {
                if step.outputs > 0 || step.sent != Sent::default() {
                    self.fail(&format!("client {c}"), "active while not connected".into());
                }
                continue;
            };
            let name = self.cconns[index].name.clone();
            if expect_lost != step.lost {
                let silent = self.cconns[index].silent;
                self.fail(
                    &name,
                    format!(
                        "silent for {silent} epochs (limit {limit}) or a stalled close, but lost = {}",
                        step.lost
                    ),
                );
            }
            if step.lost {
                continue;
            }
            if connecting {
                let due = self.cconns[index].connecting_epochs % 2 == 1;
                if step.sent.connect != due || !step.sent.data.is_empty() {
                    self.fail(
                        &name,
                        "a connecting client resends its Connect, only, in epoch 1, 3, 5...".into(),
                    );
                }
                continue;
            }
            self.check_epoch_sends(
                false,
                index,
                true,
                Held::No,
                data_before,
                &expected,
                &step.sent,
            );
        }
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

/// Why a server connection's datagrams may be held back this epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    No,
    /// Anti-amplification: its address has not proven it receives them.
    Unvalidated,
    /// A challenge runs: nothing at all is sent for it.
    Challenged,
}

/// Whether `conn`'s next epoch ends it for a stalled close: closing, with
/// messages in flight and nothing newly acknowledged for its stall limit
/// (less one epoch if it is `excused`: its datagrams were held back).
fn stall_due(conn: &liveseq::proto::Conn, excused: bool) -> bool {
    conn.phase() == Phase::Closing
        && conn.unacked() > 0
        && conn.epochs_stalled().saturating_sub(u32::from(excused)) + 1 >= conn.stall_limit()
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sent {
    data: Vec<u64>,
    heartbeat: bool,
    connect: bool,
    /// A server's `(Ack, id, isn)`: the Connect's Ack, or a repeat of it.
    isn_ack: bool,
}

/// LSP's integrity rules, applied as the receiver will apply them, to a Data
/// message whose payload the network changed to `damaged`: a payload shorter
/// than `Size` is dropped; a longer one is cut to `Size`; then the checksum
/// must match. Returns what the receiver would accept if the damage slips
/// through those rules (the checksum is a 16-bit one's-complement sum, so
/// some changes cancel out), `None` if the damage is caught or undone by the
/// truncation.
pub fn undetectable_damage(sent: &Message<'_>, damaged: &[u8]) -> Option<Vec<u8>> {
    let size = usize::try_from(sent.size).ok()?;
    let seen = damaged.get(..size)?;
    let changed = seen != &sent.payload[..];
    (changed && checksum(sent.conn_id, sent.seq_num, sent.size, seen) == sent.checksum)
        .then(|| seen.to_vec())
}
