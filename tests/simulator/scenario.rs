//! What defines a run (`Scenario`, printed and parsed as one line) and
//! what it ended with (`Outcome`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use liveseq::{Params, ReconnectPolicy};

use super::{TICK, TICKS_PER_EPOCH};

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

    pub(super) fn faulty(&self) -> bool {
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
