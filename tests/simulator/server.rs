//! The server side: its inputs (datagrams, the application's writes and
//! closes), and every output and datagram of the `ServerCore` checked
//! against the shadows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use liveseq::proto::{Message, MsgType, Phase, ServerOutput, AMPLIFICATION_FACTOR};
use liveseq::{ConnId, ConnState, ServerEvent};
use rand::Rng;

use super::network::{node_of, Node, SERVER_IPS};
use super::shadow::{Decision, End, Sent, Shadow};
use super::{Input, Sim};

/// What one server input produced.
#[derive(Default)]
pub(super) struct ServerStep {
    pub(super) sent: HashMap<u32, Sent>,
    /// Connection ends and admissions, in output order.
    pub(super) changes: Vec<(u32, ConnState)>,
    pub(super) refused: Vec<SocketAddr>,
    pub(super) transmits: Vec<(SocketAddr, Message<'static>)>,
}

impl Sim {
    /// A datagram from `from`, sent to the server's address `local`.
    pub(super) fn server_receive(&mut self, from: SocketAddr, local: IpAddr, msg: Message<'_>) {
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
            self.server.handle_to(now, from, Some(local), &encoded);
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
        self.server.handle_to(now, from, Some(local), &encoded);
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

    /// Drains the server's outputs and datagrams after an input, checking
    /// each, and puts the datagrams on the wire. `touched` are connections
    /// whose limits to check besides those that sent.
    pub(super) fn server_pump(&mut self, input: Input, touched: &[u32]) -> ServerStep {
        let mut step = ServerStep::default();
        let mut reads: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        self.server_input = input;
        while let Some(output) = self.server.poll_output() {
            self.server_output(output, &mut step, &mut reads);
        }
        // The address each datagram leaves from, beside `step.transmits`.
        let mut sources = Vec::new();
        while let Some((local, to, msg)) = self.server.poll_transmit_from() {
            step.transmits.push((to, msg.into_owned()));
            sources.push(local);
        }
        let epoch = self.epochs_done;
        let w = u64::from(self.p.window_size);
        let m = self.p.max_unacked_messages as usize;
        let mut violations = Vec::new();
        for ((to, msg), &local) in step.transmits.iter().zip(&sources) {
            let id = msg.conn_id;
            // A client's socket is connected to the address it sends to:
            // anything from another address is dropped.
            let expected = match node_of(*to) {
                Node::Client(c) => self.server_ip_of(c),
                Node::Storm(j) => self.storm_server_ips[j],
                Node::Server => self.fail("server", format!("sent {msg:?} to itself")),
            };
            if local != Some(expected) {
                let local = local.map_or("the socket's own address".into(), |ip| ip.to_string());
                violations.push((
                    id,
                    format!("sent {msg:?} to {to} from {local}, not from {expected}, where its peer sends"),
                ));
            }
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
                    if input == Input::Other && s.sends.insert(msg.seq_num, (epoch, 0, 1)).is_some()
                    {
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
            if conn.reorder_buffered().0 > (w as usize).saturating_sub(1) {
                violations.push((
                    id,
                    format!("{} buffered, window {w}", conn.reorder_buffered().0),
                ));
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
                        e.insert((epoch, 0, 1));
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
        for ((to, msg), local) in step.transmits.iter().zip(sources) {
            // What goes to a storm address goes nowhere.
            if let Node::Client(c) = node_of(*to) {
                let from = local.unwrap_or(SERVER_IPS[0]);
                self.transmit(Node::Server, Node::Client(c), from, msg);
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
    pub(super) fn server_app(&mut self) {
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
}
