//! The simulated network: the nodes and their fake addresses, datagrams
//! on the wire, its faults (drops, duplicates, delays, damage, a
//! partition) and delivery, and the model of which damage slips past
//! LSP's integrity rules.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use liveseq::proto::{checksum, Message, MsgType};
use rand::Rng;

use super::{Input, Sim, TICKS_PER_EPOCH};

/// The server's port, at each of its addresses.
const SERVER_PORT: u16 = 9000;

/// The server's two local addresses: it is bound to a wildcard address
/// on a host that has both, and each client sends to one of them
/// (`Sim::server_ip_of`), chosen per client by the scenario's seed.
pub(super) const SERVER_IPS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
];

/// The server at its local address `ip`.
pub(super) fn server_addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, SERVER_PORT)
}

pub(super) fn client_addr(c: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 10000 + c as u16)
}

fn storm_addr(j: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), 20000 + j as u16)
}

pub(super) fn node_of(addr: SocketAddr) -> Node {
    match addr.ip() {
        IpAddr::V4(ip) if ip.octets()[3] == 2 => Node::Client(usize::from(addr.port() - 10000)),
        IpAddr::V4(ip) if ip.octets()[3] == 3 => Node::Storm(usize::from(addr.port() - 20000)),
        _ => Node::Server,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Node {
    Server,
    Client(usize),
    Storm(usize),
}

pub(super) struct Datagram {
    pub(super) due: u64,
    pub(super) order: u64,
    pub(super) from: Node,
    pub(super) to: Node,
    /// The server's end of it: the address it was sent to (to the server)
    /// or from (from the server).
    pub(super) server_ip: IpAddr,
    pub(super) bytes: Vec<u8>,
}

impl Sim {
    fn partitioned(&self, a: Node, b: Node) -> bool {
        let involves_zero = a == Node::Client(0) || b == Node::Client(0);
        involves_zero
            && self
                .partition
                .is_some_and(|(s, e)| self.tick >= s && self.tick < e)
    }

    /// Whether `payload` is an undetectable damage of Data `sn` of
    /// connection `id` on its way to the server (`to_server`) or the client.
    pub(super) fn damage_seen(&self, to_server: bool, id: u32, sn: u64, payload: &[u8]) -> bool {
        self.undetectable
            .get(&(to_server, id, sn))
            .is_some_and(|seen| seen.iter().any(|p| p == payload))
    }

    /// The server address client `c` sends to (a restarted client keeps it).
    pub(super) fn server_ip_of(&self, c: usize) -> IpAddr {
        self.server_ips[c]
    }

    /// Puts a datagram on the simulated wire, through the faults;
    /// `server_ip` is the server's end of it (see [`Datagram::server_ip`]).
    pub(super) fn transmit(&mut self, from: Node, to: Node, server_ip: IpAddr, msg: &Message<'_>) {
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
                payload.extend((0..extra).map(|_| self.rng.r#gen::<u8>()));
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
                server_ip,
                bytes: bytes.clone(),
            });
        }
    }

    pub(super) fn deliver_due(&mut self) {
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
                    self.client_receive(c, server_addr(d.server_ip), msg);
                    clients_touched.insert(c);
                }
                (Node::Client(c), Node::Server) => {
                    self.server_receive(client_addr(c), d.server_ip, msg);
                    server_touched = true;
                }
                (Node::Storm(j), Node::Server) => {
                    self.server_receive(storm_addr(j), d.server_ip, msg);
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
