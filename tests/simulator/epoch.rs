//! Epochs: one epoch for the server and every client, with the exact
//! epoch of each loss, back-off, heartbeats, Connect re-sends and re-acks
//! checked.

use std::collections::{BTreeMap, BTreeSet};

use liveseq::proto::{Phase, CONNECT_REACKS, MAX_UNANSWERED};
use liveseq::{ConnId, ConnState};

use super::shadow::{Sent, Shadow};
use super::{Input, Sim};

/// Why a server connection's datagrams may be held back this epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    No,
    /// Anti-amplification: its address has not proven it receives them.
    Unvalidated,
    /// A challenge runs: nothing at all is sent for it.
    Challenged,
}

/// Whether `conn`'s next epoch (number `epoch`) ends it for a stalled
/// close: closing, with messages in flight, and either its oldest message
/// tried `MAX_UNANSWERED` times on the schedule (by the shadow's count) and
/// due again, or nothing newly acknowledged for its stall limit; if it is
/// `excused` (its datagrams were held back) the last epoch does not count,
/// nor a try made in it.
fn stall_due(
    conn: &liveseq::proto::Conn,
    sends: &mut BTreeMap<u64, (u64, u32, u32)>,
    epoch: u64,
    excused: bool,
) -> bool {
    if conn.phase() != Phase::Closing || conn.unacked() == 0 {
        return false;
    }
    let oldest = sends.get_mut(&conn.oldest_unacked());
    let unanswered = oldest.is_some_and(|(last, backoff, tries)| {
        if excused && epoch - *last == 1 && *tries > 1 {
            *tries -= 1;
        }
        *tries >= MAX_UNANSWERED && epoch - *last > u64::from(*backoff)
    });
    unanswered || conn.epochs_stalled().saturating_sub(u32::from(excused)) + 1 >= conn.stall_limit()
}

impl Sim {
    /// Expected resends of a connection at this epoch, by its back-off schedule.
    fn due_resends(t: &mut Shadow, in_flight: &BTreeSet<u64>, epoch: u64) -> BTreeSet<u64> {
        t.sends.retain(|sn, _| in_flight.contains(sn));
        t.sends
            .iter()
            .filter(|&(_, &(last, backoff, _))| epoch - last > u64::from(backoff))
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
            if let Some((last, backoff, tries)) = t.sends.get_mut(sn) {
                *last = epoch;
                *backoff = if *backoff == 0 { 1 } else { *backoff * 2 }.min(cap);
                *tries += 1;
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
    pub(super) fn epoch_tick(&mut self) {
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
            let excused = self.server.unsent_this_epoch(ConnId::from(id));
            let conn = self.server.conn(ConnId::from(id)).expect("live");
            let in_flight: BTreeSet<u64> = conn.in_flight().collect();
            let t = self.sconns.get_mut(&id).expect("live");
            let stall_due = stall_due(&conn, &mut t.sends, epoch, excused);
            drop(conn);
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
                let t = &mut self.cconns[index];
                let stalled = stall_due(conn, &mut t.sends, epoch, false);
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
}
