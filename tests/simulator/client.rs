//! The client side: client processes (fresh cores, restarts, reconnects)
//! and every output and datagram of a `ClientCore` checked against its
//! connection's shadow.

use liveseq::proto::{ClientConfig, ClientCore, ClientOutput, Message, MsgType, Phase};
use liveseq::{ConnId, ConnState};
use rand::Rng;

use std::net::SocketAddr;

use super::network::{client_addr, server_addr, Node};
use super::shadow::{End, Sent, Shadow};
use super::{Input, Sim};

/// One client process: its core, and what its application has seen.
pub(super) struct Client {
    pub(super) core: ClientCore,
    /// Its current connection's shadow, in `Sim::cconns`.
    pub(super) conn: usize,
    pub(super) generation: u32,
    /// Messages the application wrote (this generation).
    pub(super) written: usize,
    /// The last state output.
    pub(super) state: ConnState,
    pub(super) closing: bool,
    pub(super) close_tick: u64,
    /// Nothing more can happen to it.
    pub(super) done: bool,
    pub(super) drained: bool,
    pub(super) lost_reported: bool,
    pub(super) connect_result: bool,
    /// The lost connection a `Reconnected` must name.
    pub(super) reconnect_old: Option<u32>,
    /// `Reconnected` was the last output (a `State` `Connected` must follow).
    pub(super) reconnected_new: Option<u32>,
    /// The last output was this state (`ConnectResult` follows one).
    pub(super) prev_state: Option<ConnState>,
    pub(super) attempt: u32,
    /// Reconnects so far (this generation).
    pub(super) reconnects: u32,
    pub(super) restart_at: Option<u64>,
}

/// What one client input produced.
#[derive(Default)]
pub(super) struct ClientStep {
    pub(super) sent: Sent,
    /// The connection current before the input was lost in it.
    pub(super) lost: bool,
    pub(super) outputs: usize,
}

impl Sim {
    /// A fresh client process at client `c`'s address, with its first
    /// connection's shadow.
    pub(super) fn new_client_core(&mut self, c: usize, generation: u32) -> Client {
        let isn = u64::from(self.rng.r#gen::<u32>());
        let mut config = ClientConfig::new(self.p);
        config.coalesce_acks = self.sc.coalesce;
        config.reconnect = self.policy.clone();
        config.seed = self.rng.r#gen();
        let server = server_addr(self.server_ip_of(c));
        let core = ClientCore::new(self.now(), server, isn, config);
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

    /// A new client core's first output is its `Connecting` state; then its
    /// Connect goes out.
    pub(super) fn first_outputs(&mut self, c: usize) {
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

    /// A datagram from the server's address `from`.
    pub(super) fn client_receive(&mut self, c: usize, from: SocketAddr, msg: Message<'_>) {
        let now = self.now();
        let before = self.clients[c].core.stats(now).rejected;
        self.clients[c].core.handle_message(now, from, msg);
        let after = self.clients[c].core.stats(now).rejected;
        let conn = self.clients[c].conn;
        if after == before && self.cconns[conn].end.is_none() {
            self.cconns[conn].silent = 0;
        }
        self.client_pump(c, Input::Other);
    }

    pub(super) fn client_timeouts(&mut self) {
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
    pub(super) fn client_pump(&mut self, c: usize, input: Input) -> ClientStep {
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
        let server = server_addr(self.server_ip_of(c));
        while let Some((to, msg)) = self.clients[c].core.poll_transmit() {
            if to != server {
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
                    if input == Input::Other && t.sends.insert(msg.seq_num, (epoch, 0, 1)).is_some()
                    {
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
        if conn.reorder_buffered().0 > (w as usize).saturating_sub(1) {
            violations.push(format!(
                "{} buffered, window {w}",
                conn.reorder_buffered().0
            ));
        }
        if conn.phase() == Phase::Closing && conn.is_idle() {
            violations.push("closing, everything acknowledged, but not drained".into());
        }
        if t.end.is_some_and(|e| e != End::Vanished)
            && (!conn.is_idle() || conn.reorder_buffered().0 != 0)
        {
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
            let server_ip = self.server_ip_of(c);
            self.transmit(Node::Client(c), Node::Server, server_ip, msg);
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
    pub(super) fn restarts(&mut self) {
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
}
