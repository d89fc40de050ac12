//! A deterministic network simulator for the protocol core.
//!
//! One server-side table and N clients, all real [`Conn`] state machines,
//! exchange real encoded datagrams through a simulated network driven by a
//! seeded generator. Time is virtual: an epoch is `TICKS_PER_EPOCH` ticks, so
//! delays and reordering happen inside epochs too. Nothing here reads a clock
//! or touches a socket, so a scenario replays exactly from its description.
//!
//! Every step checks the protocol's invariants with shadow models; a broken
//! invariant panics with the tick, the connection and what was expected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use liveseq::proto::{checksum, Conn, Event, Phase};
use liveseq::proto::{Message, MsgType, CONNECT_REACKS};
use liveseq::Params;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const TICKS_PER_EPOCH: u64 = 4;

/// Everything that defines one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub window: u32,
    pub max_unacked: u32,
    pub max_backoff: u32,
    pub epoch_limit: u32,
    pub clients: usize,
    /// Messages each client writes to the server, and the server to each client.
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
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "w={},m={},b={},l={},c={},n={},s={},drop={},dup={},delay={},de={},corrupt={},short={},long={},part={},co={},early={},seed={}",
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
            self.seed
        )
    }
}

impl FromStr for Scenario {
    type Err = String;

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

    fn faulty(&self) -> bool {
        self.drop > 0
            || self.delay > 0
            || self.corrupt > 0
            || self.shorten > 0
            || self.partition_epochs > 0
    }
}

/// What a run ended with, for tests that look beyond the invariants.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ticks: u64,
    pub delivered: usize,
    pub lost: usize,
    pub drained: usize,
    pub retransmissions: u64,
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
}

struct Datagram {
    due: u64,
    order: u64,
    from: Node,
    to: Node,
    bytes: Vec<u8>,
}

/// The shadow of one connection: what the checks expect of it.
struct Tracked {
    name: String,
    conn: Conn,
    /// The other end of the connection.
    peer: Node,
    /// Payloads this side wrote, in order.
    written: Vec<Vec<u8>>,
    /// Payloads the application received, in order.
    delivered: Vec<Vec<u8>>,
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
    ended: Option<Event>,
    retransmissions: u64,
}

impl Tracked {
    fn new(name: String, conn: Conn, peer: Node, is_client: bool) -> Tracked {
        Tracked {
            name,
            conn,
            peer,
            written: Vec::new(),
            delivered: Vec::new(),
            sends: BTreeMap::new(),
            data_since_tick: false,
            silent: 0,
            heard: is_client,
            reacks: 0,
            connecting_epochs: 0,
            closing: false,
            closed_before_reading_all: false,
            ended: None,
            retransmissions: 0,
        }
    }
}

pub struct Sim {
    sc: Scenario,
    p: Params,
    rng: SmallRng,
    tick: u64,
    net: Vec<Datagram>,
    next_order: u64,
    clients: Vec<Tracked>,
    /// Server connections by client index (the client's "address").
    server: HashMap<usize, Tracked>,
    /// Ended server connections, kept for the final checks.
    server_ended: Vec<(usize, Tracked)>,
    next_id: u32,
    partition: Option<(u64, u64)>,
    payload_counter: u64,
    /// `on_epoch` rounds so far: a send is stamped with it, so a message sent
    /// just before an epoch is due for its first resend at that epoch.
    epochs_done: u64,
    /// Per receiving end `(node, client index)` and sequence number: damaged
    /// payloads that pass LSP's integrity rules, as the receiver will see them.
    undetectable: HashMap<(Node, usize, u64), Vec<Vec<u8>>>,
    undetectable_damage: u64,
    damaged_deliveries: usize,
}

enum Input {
    Epoch,
    Other,
}

impl Sim {
    pub fn new(sc: &Scenario) -> Sim {
        let p = sc.params();
        p.validate().expect("scenario parameters");
        let mut rng = SmallRng::seed_from_u64(sc.seed);
        let clients = (0..sc.clients)
            .map(|c| {
                let isn = u64::from(rng.gen::<u32>());
                let mut conn = Conn::client(p, isn);
                conn.set_coalesce_acks(sc.coalesce);
                Tracked::new(format!("client {c}"), conn, Node::Server, true)
            })
            .collect();
        let partition = (sc.partition_epochs > 0).then(|| {
            let start = rng.gen_range(0..20 * TICKS_PER_EPOCH);
            (start, start + sc.partition_epochs * TICKS_PER_EPOCH)
        });
        Sim {
            sc: sc.clone(),
            p,
            rng,
            tick: 0,
            net: Vec::new(),
            next_order: 0,
            clients,
            server: HashMap::new(),
            server_ended: Vec::new(),
            next_id: 1,
            partition,
            payload_counter: 0,
            epochs_done: 0,
            undetectable: HashMap::new(),
            undetectable_damage: 0,
            damaged_deliveries: 0,
        }
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
        // Initial Connects.
        for c in 0..self.clients.len() {
            self.pump_for(Node::Client(c), c, Input::Other);
        }
        while !self.done() {
            if self.tick > limit_ticks {
                let states: Vec<String> = self
                    .clients
                    .iter()
                    .chain(self.server.values())
                    .map(|t| {
                        format!(
                            "{}: {:?} ended {:?} closing {} wrote {} read {} unacked {} queued {} silent {}",
                            t.name,
                            t.conn.phase(),
                            t.ended,
                            t.closing,
                            t.written.len(),
                            t.delivered.len(),
                            t.conn.unacked(),
                            t.conn.queued(),
                            t.conn.epochs_silent()
                        )
                    })
                    .collect();
                self.fail(
                    "simulation",
                    format!("did not finish:\n  {}", states.join("\n  ")),
                );
            }
            self.tick += 1;
            self.deliver_due();
            self.application_steps();
            if self.tick % TICKS_PER_EPOCH == 0 {
                self.epoch_tick();
            }
        }
        self.final_checks()
    }

    fn done(&self) -> bool {
        self.clients.iter().all(|t| t.ended.is_some()) && self.server.is_empty()
    }

    fn tracked(&mut self, node: Node, client: usize) -> &mut Tracked {
        match node {
            Node::Client(c) => &mut self.clients[c],
            Node::Server => match self.server.get_mut(&client) {
                Some(t) => t,
                None => {
                    let (_, t) = self
                        .server_ended
                        .iter_mut()
                        .rev()
                        .find(|(c, _)| *c == client)
                        .expect("server connection");
                    t
                }
            },
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
                let receiver = match (from, to) {
                    (Node::Client(c), Node::Server) => (Node::Server, c),
                    (Node::Server, Node::Client(c)) => (Node::Client(c), c),
                    _ => unreachable!(),
                };
                self.undetectable_damage += 1;
                self.undetectable
                    .entry((receiver.0, receiver.1, msg.seq_num))
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
        let mut touched = BTreeSet::new();
        for d in due {
            if self.partitioned(d.from, d.to) {
                continue;
            }
            let Ok(msg) = Message::decode(&d.bytes) else {
                self.fail("network", "our own encoding did not decode".into())
            };
            match (d.from, d.to) {
                (Node::Server, Node::Client(c)) => {
                    self.receive(Node::Client(c), c, msg);
                    touched.insert((Node::Client(c), c));
                }
                (Node::Client(c), Node::Server) => {
                    if msg.kind == MsgType::Connect {
                        self.server_connect(c, msg.seq_num);
                    } else if self
                        .server
                        .get(&c)
                        .is_some_and(|t| t.conn.conn_id() == msg.conn_id)
                    {
                        self.receive(Node::Server, c, msg);
                        touched.insert((Node::Server, c));
                    }
                }
                _ => unreachable!(),
            }
        }
        // The end of a receive batch: owed CAcks go out.
        for (node, c) in touched {
            if self.is_live(node, c) {
                self.tracked(node, c).conn.flush_acks();
                self.pump_for(node, c, Input::Other);
            }
        }
    }

    fn is_live(&self, node: Node, c: usize) -> bool {
        match node {
            Node::Client(c) => self.clients[c].ended.is_none(),
            Node::Server => self.server.get(&c).is_some_and(|t| t.ended.is_none()),
        }
    }

    fn server_connect(&mut self, c: usize, isn: u64) {
        if let Some(t) = self.server.get(&c) {
            if t.conn.isn() == isn {
                self.receive(Node::Server, c, Message::connect(isn));
                return;
            }
            // A new incarnation cannot happen here: clients never restart.
            self.fail("server", format!("connect from client {c} with a new isn"));
        }
        if self.server_ended.iter().any(|(e, _)| *e == c) {
            return; // the connection ended; a late duplicate Connect is ignored
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut conn = Conn::server(self.p, id, isn);
        conn.set_coalesce_acks(self.sc.coalesce);
        self.server.insert(
            c,
            Tracked::new(
                format!("server conn {id} (client {c})"),
                conn,
                Node::Client(c),
                false,
            ),
        );
        self.pump_for(Node::Server, c, Input::Other);
    }

    fn receive(&mut self, node: Node, c: usize, msg: Message<'_>) {
        let t = self.tracked(node, c);
        if t.ended.is_some() {
            return;
        }
        let kind = msg.kind;
        let accepted = t.conn.handle(msg).is_ok();
        if accepted {
            t.silent = 0;
        }
        // Anything but a Connect, even a damaged one, shows the peer speaks.
        if kind != MsgType::Connect {
            t.heard = true;
        }
        self.pump_for(node, c, Input::Other);
    }

    /// Drains a connection's outputs onto the wire, checking each against
    /// the invariants, then its deliveries and events. Returns what it sent.
    fn pump_for(&mut self, node: Node, c: usize, input: Input) -> Sent {
        let epoch = self.epochs_done;
        let w = u64::from(self.p.window_size);
        let m = self.p.max_unacked_messages as usize;
        let mut sent = Sent::default();
        let mut out = Vec::new();
        let mut violations = Vec::new();
        {
            let t = self.tracked(node, c);
            let oldest = t.conn.oldest_unacked();
            let isn = t.conn.isn();
            while let Some(msg) = t.conn.poll_transmit() {
                if node == Node::Server && msg.kind == MsgType::Ack && msg.seq_num == isn {
                    sent.isn_ack = true;
                }
                match msg.kind {
                    MsgType::Data => {
                        if msg.seq_num > oldest + w - 1 {
                            violations.push(format!(
                                "sent {} beyond the window (oldest unacked {oldest})",
                                msg.seq_num
                            ));
                        }
                        sent.data.push(msg.seq_num);
                    }
                    MsgType::Ack if msg.seq_num == 0 => sent.heartbeat = true,
                    MsgType::Connect => sent.connect = true,
                    _ => {}
                }
                out.push(msg.into_owned());
            }
            if t.conn.unacked() > m {
                violations.push(format!("{} unacknowledged, max {m}", t.conn.unacked()));
            }
            // At most W - 1 can wait: the next expected one is delivered, not buffered.
            if t.conn.buffered() > (w as usize).saturating_sub(1) {
                violations.push(format!("{} buffered, window {w}", t.conn.buffered()));
            }
            if !sent.data.is_empty() {
                t.data_since_tick = true;
            }
            if let Input::Other = input {
                for &sn in &sent.data {
                    if t.sends.insert(sn, (epoch, 0)).is_some() {
                        violations.push(format!("{sn} sent again outside an epoch tick"));
                    }
                }
            }
        }
        if let Some(v) = violations.into_iter().next() {
            let name = self.tracked(node, c).name.clone();
            self.fail(&name, v);
        }
        let peer = self.tracked(node, c).peer;
        for msg in &out {
            self.transmit(node, peer, msg);
        }
        self.collect(node, c);
        sent
    }

    /// Takes deliveries and events, checking order, exactly-once and close.
    fn collect(&mut self, node: Node, c: usize) {
        let peer_written: Vec<Vec<u8>> = match node {
            Node::Client(c) => self.server.get(&c).map(|t| t.written.clone()).or_else(|| {
                self.server_ended
                    .iter()
                    .find(|(e, _)| *e == c)
                    .map(|(_, t)| t.written.clone())
            }),
            Node::Server => Some(self.clients[c].written.clone()),
        }
        .unwrap_or_default();
        let mut problem = None;
        let mut ended = None;
        let limit = self.p.epoch_limit;
        let (isn, first) = {
            let t = self.tracked(node, c);
            (t.conn.isn(), t.delivered.len())
        };
        let deliveries: Vec<Vec<u8>> =
            std::iter::from_fn(|| self.tracked(node, c).conn.poll_delivered()).collect();
        for (k, payload) in deliveries.iter().enumerate() {
            let i = first + k;
            if peer_written.get(i) == Some(payload) {
                continue;
            }
            // Both ends number from the client's isn + 1.
            let sn = isn + 1 + i as u64;
            let damaged = i < peer_written.len()
                && self
                    .undetectable
                    .get(&(node, c, sn))
                    .is_some_and(|seen| seen.contains(payload));
            if damaged {
                self.damaged_deliveries += 1;
            } else {
                problem = Some(format!(
                    "delivery {i} (sequence number {sn}) is not the peer's message {i} \
                     (gap, duplicate, reorder or damage the checksum would catch)"
                ));
            }
        }
        {
            let t = self.tracked(node, c);
            t.delivered.extend(deliveries);
            while let Some(event) = t.conn.poll_event() {
                match event {
                    Event::Connected => {}
                    Event::Drained => {
                        if !t.closing {
                            problem = Some("drained without closing".into());
                        }
                        if t.conn.unacked() + t.conn.queued() > 0 {
                            problem = Some("drained with messages unacknowledged".into());
                        }
                        ended = Some(event);
                    }
                    Event::Lost => {
                        if t.silent < limit {
                            problem = Some(format!("lost after only {} silent epochs", t.silent));
                        }
                        ended = Some(event);
                    }
                    other => problem = Some(format!("unknown event {other:?}")),
                }
            }
            if t.closing
                && ended.is_none()
                && t.ended.is_none()
                && t.conn.is_idle()
                && t.conn.phase() != Phase::Drained
            {
                problem = Some("closing, everything acknowledged, but not drained".into());
            }
        }
        if let Some(p) = problem {
            let name = self.tracked(node, c).name.clone();
            self.fail(&name, p);
        }
        if let Some(event) = ended {
            let t = self.tracked(node, c);
            t.ended = Some(event);
            if !t.conn.is_idle() || t.conn.buffered() != 0 {
                let name = t.name.clone();
                self.fail(&name, "state left behind after the connection ended".into());
            }
            if let Node::Server = node {
                let t = self.server.remove(&c).expect("server connection");
                self.server_ended.push((c, t));
            }
        }
    }

    /// The applications: write the workload, close when done.
    fn application_steps(&mut self) {
        for c in 0..self.clients.len() {
            // Client c writes its next message now and then.
            let t = &self.clients[c];
            let client_writes = t.ended.is_none()
                && !t.closing
                && t.conn.phase() == Phase::Open
                && t.written.len() < self.sc.messages;
            if client_writes && self.rng.gen_bool(0.5) {
                let payload = self.next_payload();
                self.clients[c].written.push(payload.clone());
                self.clients[c].conn.write(payload);
                self.pump_for(Node::Client(c), c, Input::Other);
            }
            // The server writes to client c.
            let server_writes = self.server.get(&c).is_some_and(|t| {
                t.ended.is_none() && !t.closing && t.written.len() < self.sc.messages
            });
            if server_writes && self.rng.gen_bool(0.5) {
                let payload = self.next_payload();
                let t = self.server.get_mut(&c).expect("server connection");
                t.written.push(payload.clone());
                t.conn.write(payload);
                self.pump_for(Node::Server, c, Input::Other);
            }
            // Closes: once everything is written (and, unless closing early, read).
            let n = self.sc.messages;
            let client_ready = {
                let t = &self.clients[c];
                t.ended.is_none()
                    && !t.closing
                    && t.conn.phase() == Phase::Open
                    && t.written.len() == n
            };
            if client_ready {
                let read_all = self.clients[c].delivered.len() == n;
                let early = !read_all && self.chance(self.sc.early_close);
                if read_all || early {
                    let t = &mut self.clients[c];
                    t.closing = true;
                    t.closed_before_reading_all = !read_all;
                    t.conn.close();
                    self.pump_for(Node::Client(c), c, Input::Other);
                }
            }
            let server_ready = self
                .server
                .get(&c)
                .is_some_and(|t| t.ended.is_none() && !t.closing && t.written.len() == n);
            if server_ready {
                let read_all = self.server[&c].delivered.len() == n;
                let early = !read_all && self.chance(self.sc.early_close);
                if read_all || early {
                    let t = self.server.get_mut(&c).expect("server connection");
                    t.closing = true;
                    t.closed_before_reading_all = !read_all;
                    t.conn.close();
                    self.pump_for(Node::Server, c, Input::Other);
                }
            }
        }
    }

    fn next_payload(&mut self) -> Vec<u8> {
        self.payload_counter += 1;
        let len = self.rng.gen_range(0..=self.sc.max_size);
        let mut p: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
        // Make every payload unique, so a duplicate delivery cannot hide.
        p.extend_from_slice(&self.payload_counter.to_le_bytes());
        p
    }

    /// One epoch for every live connection, checking back-off, heartbeats,
    /// Connect resends and the exact epoch of loss.
    fn epoch_tick(&mut self) {
        self.epochs_done += 1;
        let epoch = self.epochs_done;
        let mut nodes: Vec<(Node, usize)> = (0..self.clients.len())
            .map(|c| (Node::Client(c), c))
            .collect();
        nodes.extend(self.server.keys().map(|&c| (Node::Server, c)));
        nodes.sort();
        for (node, c) in nodes {
            if !self.is_live(node, c) {
                continue;
            }
            let limit = self.p.epoch_limit;
            let cap = self.p.max_backoff_interval;
            let (expect_lost, expected_resends, connecting, heard, data_before) = {
                let t = self.tracked(node, c);
                t.silent += 1;
                if t.conn.phase() == Phase::Connecting {
                    t.connecting_epochs += 1;
                }
                let in_flight: BTreeSet<u64> = t.conn.in_flight().collect();
                t.sends.retain(|sn, _| in_flight.contains(sn));
                let expected: BTreeSet<u64> = t
                    .sends
                    .iter()
                    .filter(|(_, &(last, backoff))| epoch - last > u64::from(backoff))
                    .map(|(&sn, _)| sn)
                    .collect();
                (
                    t.silent >= limit,
                    expected,
                    t.conn.phase() == Phase::Connecting,
                    t.heard,
                    t.data_since_tick,
                )
            };
            self.tracked(node, c).conn.on_epoch();
            let sent = self.pump_for(node, c, Input::Epoch);
            let t = self.tracked(node, c);
            let lost_now = t.ended == Some(Event::Lost) || t.conn.phase() == Phase::Lost;
            let name = t.name.clone();
            if expect_lost != lost_now {
                let silent = self.tracked_silent(node, c);
                self.fail(
                    &name,
                    format!("silent for {silent} epochs (limit {limit}) but lost = {lost_now}"),
                );
            }
            if lost_now {
                continue;
            }
            if connecting {
                let due = self.tracked(node, c).connecting_epochs % 2 == 1;
                if sent.connect != due || !sent.data.is_empty() {
                    self.fail(
                        &name,
                        "a connecting client resends its Connect, only, in epoch 1, 3, 5...".into(),
                    );
                }
                continue;
            }
            if !heard && node == Node::Server {
                let t = self.tracked(node, c);
                let due = t.reacks < CONNECT_REACKS;
                t.reacks += 1;
                if sent.isn_ack != due {
                    self.fail(
                        &name,
                        format!(
                            "re-sent the Connect's Ack = {}, expected {due}",
                            sent.isn_ack
                        ),
                    );
                }
            }
            let resent: BTreeSet<u64> = sent.data.iter().copied().collect();
            if resent != expected_resends {
                self.fail(
                    &name,
                    format!("resent {resent:?}, back-off schedule says {expected_resends:?}"),
                );
            }
            let t = self.tracked(node, c);
            t.retransmissions += resent.len() as u64;
            for sn in &resent {
                if let Some((last, backoff)) = t.sends.get_mut(sn) {
                    *last = epoch;
                    *backoff = if *backoff == 0 { 1 } else { *backoff * 2 }.min(cap);
                }
            }
            let data_this_epoch = data_before || !resent.is_empty();
            t.data_since_tick = false;
            if heard && sent.heartbeat == data_this_epoch {
                let what = if sent.heartbeat {
                    "heartbeat in an epoch with data"
                } else {
                    "no heartbeat in an idle epoch"
                };
                self.fail(&name, what.into());
            }
        }
    }

    fn tracked_silent(&mut self, node: Node, c: usize) -> u32 {
        self.tracked(node, c).silent
    }

    /// Exactly-once in order at both ends, or the connection reported lost.
    fn final_checks(self) -> Outcome {
        let mut out = Outcome {
            ticks: self.tick,
            undetectable_damage: self.undetectable_damage,
            damaged_deliveries: self.damaged_deliveries,
            ..Outcome::default()
        };
        for (c, s) in &self.server_ended {
            let client = &self.clients[*c];
            for (sender, receiver) in [(client, s), (s, client)] {
                out.delivered += receiver.delivered.len();
                let complete =
                    sender.ended == Some(Event::Drained) && !receiver.closed_before_reading_all;
                if complete
                    && receiver.delivered.len() != sender.written.len()
                    && receiver.ended != Some(Event::Lost)
                {
                    panic!(
                        "{} drained {} messages but {} read {}\nscenario: {}",
                        sender.name,
                        sender.written.len(),
                        receiver.name,
                        receiver.delivered.len(),
                        self.sc
                    );
                }
            }
        }
        let all: Vec<&Tracked> = self
            .clients
            .iter()
            .chain(self.server_ended.iter().map(|(_, t)| t))
            .collect();
        out.lost = all.iter().filter(|t| t.ended == Some(Event::Lost)).count();
        out.drained = all
            .iter()
            .filter(|t| t.ended == Some(Event::Drained))
            .count();
        out.retransmissions = all.iter().map(|t| t.retransmissions).sum();
        // A perfect network loses nothing: every client drains, every
        // message arrives. (Server connections end Lost: LSP has no close
        // message, so they learn of the client's close by its silence.)
        if !self.sc.faulty() {
            for t in &self.clients {
                if t.ended != Some(Event::Drained) {
                    panic!(
                        "{} ended {:?} on a perfect network\nscenario: {}",
                        t.name, t.ended, self.sc
                    );
                }
            }
        }
        out
    }
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

#[derive(Default)]
struct Sent {
    data: Vec<u64>,
    heartbeat: bool,
    connect: bool,
    /// A server's `(Ack, id, isn)`: the Connect's Ack, or a repeat of it.
    isn_ack: bool,
}
