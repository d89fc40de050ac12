//! The shadow models the checks read: one `Shadow` per connection on
//! either side, what a step sent (`Sent`), and the shadow of the
//! server's table (what a Connect must do, and which connection lives
//! at which address).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use liveseq::proto::{Message, CHALLENGE_EPOCHS};
use liveseq::{ConnId, ConnState};

use super::server::ServerStep;
use super::Sim;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    Drained,
    Lost,
    /// Closed without draining: a close while connecting, or an abort.
    Aborted,
    /// The client process went away (a restart).
    Vanished,
}

/// The shadow of one connection, on either side: what the checks expect of it.
pub(super) struct Shadow {
    pub(super) name: String,
    /// The client's address (on both sides).
    pub(super) addr: SocketAddr,
    pub(super) isn: u64,
    /// The connection id (0 while a client is connecting).
    pub(super) id: u32,
    /// Payloads written to this connection, in order.
    pub(super) written: Vec<Vec<u8>>,
    /// Payloads the application received from it.
    pub(super) delivered: usize,
    /// Sequence numbers received in order (delivered or, once closing, consumed).
    pub(super) received: u64,
    /// Per unacknowledged sequence number: epoch of its last send, current
    /// back-off, and its tries on the epoch schedule (see `MAX_UNANSWERED`).
    pub(super) sends: BTreeMap<u64, (u64, u32, u32)>,
    pub(super) data_since_tick: bool,
    /// Epochs since the connection last accepted a message (shadow of epochs_silent).
    pub(super) silent: u32,
    /// A server connection heartbeats only once its peer spoke beyond Connect;
    /// until then it repeats the Connect's Ack in its first few epochs.
    pub(super) heard: bool,
    pub(super) reacks: u32,
    /// Epochs a client has spent connecting (it resends Connect in odd ones).
    pub(super) connecting_epochs: u32,
    pub(super) closing: bool,
    pub(super) closed_before_reading_all: bool,
    pub(super) end: Option<End>,
    pub(super) retransmissions: u64,
    /// Client: it took the id of a connection that is not its own. Server:
    /// such a client talks to it.
    pub(super) misadopted: bool,
    /// Server: `ServerEvent::Connected` was produced.
    pub(super) app_connected: bool,
    /// Server: the application's last event (`Closed` or `Lost`) was produced.
    pub(super) app_ended: bool,
    pub(super) app_lost: bool,
    /// Client: the tick it took another connection's id.
    pub(super) misadopted_at: u64,
    /// Server: epochs left to answer a challenge (a Connect with another ISN
    /// from its address); nothing is sent for it meanwhile.
    pub(super) challenge: Option<u32>,
    /// Server: admission order (the oldest unvalidated one is evicted first).
    pub(super) admitted_seq: u64,
    /// Server: bytes received from its address, and sent to it, while not
    /// validated (`heard`): at most `AMPLIFICATION_FACTOR` times as many out.
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
}

impl Shadow {
    pub(super) fn new(name: String, addr: SocketAddr, isn: u64, id: u32, heard: bool) -> Shadow {
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

/// What a Connect arriving at the server must do, by the table's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Decision {
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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Sent {
    pub(super) data: Vec<u64>,
    pub(super) heartbeat: bool,
    pub(super) connect: bool,
    /// A server's `(Ack, id, isn)`: the Connect's Ack, or a repeat of it.
    pub(super) isn_ack: bool,
}

impl Sim {
    /// What the table must do with a Connect from `from` carrying `isn`.
    pub(super) fn decide(&mut self, from: SocketAddr, isn: u64) -> Decision {
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

    pub(super) fn check_decision(
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

    /// The table as the core reports it agrees with its outputs.
    pub(super) fn check_table(&mut self) {
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
}
