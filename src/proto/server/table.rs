//! The connection table: which connection an address or an id names,
//! admission order, the ids in use, and the memory of connections that
//! ended. One short lock guards it; a datagram only looks its connection up
//! here, then is handled under that connection's own lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::slot::Slot;
use super::MAX_CONN_ID;
use crate::proto::ConnId;

/// Lock `connection`: one per connection, held for one input to it.
///
/// One connection's state behind its own lock.
pub(super) type Cell = Arc<Mutex<Slot>>;

/// Maps keyed by connection id. The server draws the ids itself, at
/// random, so no peer chooses the keys: a multiplicative hash is enough,
/// and far cheaper than the default SipHash on every datagram's lookups.
pub(super) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of a `u32` connection id (see [`IdMap`]).
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// How a connection ended, remembered for `epoch_limit` epochs so that a
/// write to it says why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    Lost,
    SlowConsumer,
    Closed,
}

/// At most this many refused addresses are remembered per epoch (each gets
/// one `Refused` output per epoch); beyond it a flood costs no memory and
/// further refusals are only counted.
const MAX_REFUSED_TRACKED: usize = 4096;

/// At most this many ended connections are remembered for late duplicate
/// Connects; beyond it, connections that end are not remembered until older
/// ones have been forgotten (each after `epoch_limit` epochs).
const MAX_ENDED_TRACKED: usize = 65536;

/// The table itself (see the module docs).
#[derive(Debug)]
pub(super) struct Table {
    pub conns: IdMap<Cell>,
    /// Each address's connection, and its id.
    pub by_addr: HashMap<SocketAddr, (u32, Cell)>,
    /// Recently ended connections by address and ISN: epochs left to
    /// remember them.
    pub ended: HashMap<(SocketAddr, u64), u32>,
    /// Recently ended connection ids: how they ended and epochs left.
    pub retired: IdMap<(Ending, u32)>,
    ids: Option<StdRng>,
    next_id: u32,
    pub closing: bool,
    refused_this_epoch: HashSet<SocketAddr>,
    /// Unvalidated connections by admission order.
    pub unvalidated: BTreeMap<u64, u32>,
    pub admissions: u64,
    pub lost_during_close: Vec<ConnId>,
    /// `Drained` was produced.
    pub drained: bool,
}

impl Table {
    pub fn new(id_seed: Option<u64>) -> Table {
        Table {
            conns: IdMap::default(),
            by_addr: HashMap::new(),
            ended: HashMap::new(),
            retired: IdMap::default(),
            ids: id_seed.map(StdRng::seed_from_u64),
            next_id: 0,
            closing: false,
            refused_this_epoch: HashSet::new(),
            unvalidated: BTreeMap::new(),
            admissions: 0,
            lost_during_close: Vec::new(),
            drained: false,
        }
    }

    /// A connection id not in use and not remembered.
    pub fn new_id(&mut self) -> u32 {
        loop {
            let id = match &mut self.ids {
                Some(rng) => rng.gen_range(1..=MAX_CONN_ID),
                None => {
                    self.next_id = if self.next_id >= MAX_CONN_ID {
                        1
                    } else {
                        self.next_id + 1
                    };
                    self.next_id
                }
            };
            if !self.conns.contains_key(&id) && !self.retired.contains_key(&id) {
                return id;
            }
        }
    }

    /// Takes connection `id` at `addr`, admitted as `admitted`, out of the
    /// table and every index.
    pub fn remove(&mut self, id: u32, addr: SocketAddr, admitted: u64) {
        self.conns.remove(&id);
        if self.by_addr.get(&addr).is_some_and(|(at, _)| *at == id) {
            self.by_addr.remove(&addr);
        }
        self.unvalidated.remove(&admitted);
    }

    /// Remembers an ended connection for `epochs` epochs: its Connect, so
    /// that late duplicates are recognised, and its id, so that it is not
    /// handed out again and writes to it say how it ended.
    pub fn retire(&mut self, id: u32, addr: SocketAddr, isn: u64, ending: Ending, epochs: u32) {
        if self.ended.len() < MAX_ENDED_TRACKED {
            self.ended.insert((addr, isn), epochs);
            self.retired.insert(id, (ending, epochs));
        }
    }

    /// Whether a refusal of `from` is the first this epoch (each address
    /// gets one `Refused` output per epoch).
    pub fn first_refusal(&mut self, from: SocketAddr) -> bool {
        self.refused_this_epoch.len() < MAX_REFUSED_TRACKED && self.refused_this_epoch.insert(from)
    }

    /// An epoch passed: refusals are announced again, and memories of ended
    /// connections age.
    pub fn on_epoch(&mut self) {
        self.refused_this_epoch.clear();
        fn forget(left: &mut u32) -> bool {
            *left = left.saturating_sub(1);
            *left > 0
        }
        self.ended.retain(|_, left| forget(left));
        self.retired.retain(|_, (_, left)| forget(left));
    }

    /// How connection `id` ended, while it is remembered.
    pub fn ending(&self, id: u32) -> Option<Ending> {
        self.retired.get(&id).map(|&(ending, _)| ending)
    }
}
