//! The fault model: an I/O-free, seeded decision per datagram of what the
//! proxy does to it (drop, duplicate, delay, reorder, corrupt, or drop in a
//! blackout), separately for each direction.
//!
//! Each client address and direction draws from its own random stream,
//! derived from the seed, so one busy client does not change the fate of
//! another's datagrams and a run with the same traffic repeats exactly.

use std::time::Duration;

use liveseq::proto::{Message, MsgType};

use crate::check::{AgeMap, Side, MAX_FLOWS};

/// Faults applied to the datagrams one side sends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirFaults {
    /// Percent of datagrams dropped.
    pub drop: f64,
    /// Percent of datagrams sent twice.
    pub dup: f64,
    /// Percent of datagrams delayed by `delay`.
    pub delay_pct: f64,
    /// The delay of a delayed datagram.
    pub delay: Duration,
    /// Percent of datagrams held back by a random time up to `reorder_max`,
    /// so that later ones overtake them.
    pub reorder: f64,
    /// Percent of Data messages corrupted so that their checksum fails.
    pub corrupt: f64,
    /// Intervals, from the start of the run, in which everything is dropped.
    pub blackouts: Vec<(Duration, Duration)>,
}

/// The faults of both directions and the seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Applied to what clients send.
    pub to_server: DirFaults,
    /// Applied to what the server sends.
    pub to_client: DirFaults,
    /// Seed of every random choice.
    pub seed: u64,
    /// Longest hold of a reordered datagram.
    pub reorder_max: Duration,
}

impl Faults {
    /// The faults of datagrams sent by `from`.
    pub fn sent_by(&self, from: Side) -> &DirFaults {
        match from {
            Side::Client => &self.to_server,
            Side::Server => &self.to_client,
        }
    }
}

/// What happens to one datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Why it was dropped (`"blackout"` or `"drop"`), if it was.
    pub dropped: Option<&'static str>,
    /// One entry per copy sent: its delay (zero: at once).
    pub copies: Vec<Duration>,
    /// The bytes to send instead of the original (corruption).
    pub replacement: Option<Vec<u8>>,
    /// Whether a reorder hold was applied.
    pub reordered: bool,
}

impl Decision {
    /// A short description of the faults applied, empty when none.
    pub fn label(&self) -> String {
        if let Some(why) = self.dropped {
            return why.to_string();
        }
        let mut parts = Vec::new();
        if self.copies.len() > 1 {
            parts.push("duplicated".to_string());
        }
        if let Some(&d) = self.copies.iter().max() {
            if !d.is_zero() {
                let what = if self.reordered {
                    "reordered"
                } else {
                    "delayed"
                };
                parts.push(format!("{what} {} ms", d.as_millis()));
            }
        }
        if self.replacement.is_some() {
            parts.push("corrupted".to_string());
        }
        parts.join(", ")
    }
}

/// SplitMix64: tiny, fast, and the same on every platform and version,
/// which is what a repeatable run needs.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number of the stream.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: f64) -> bool {
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        x * 100.0 < percent
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Decides the fate of each datagram. See the module documentation.
#[derive(Debug)]
pub struct FaultModel {
    faults: Faults,
    /// One stream per client address and direction: at most two per
    /// address the checker tracks, the least recently active forgotten
    /// (and dropped addresses at once, [`FaultModel::forget`]).
    streams: AgeMap<(usize, Side), Rng>,
}

impl FaultModel {
    /// A model applying `faults`.
    pub fn new(faults: Faults) -> FaultModel {
        FaultModel {
            faults,
            streams: AgeMap::new(2 * MAX_FLOWS),
        }
    }

    /// Forgets client address `flow` (the proxy dropped it for good).
    pub fn forget(&mut self, flow: usize) {
        self.streams.remove(&(flow, Side::Client));
        self.streams.remove(&(flow, Side::Server));
    }

    /// The fate of a datagram `from` a side of client address `flow`, at
    /// `at` since the start; `msg` is the datagram decoded, if it decodes.
    pub fn decide(
        &mut self,
        at: Duration,
        flow: usize,
        from: Side,
        msg: Option<&Message<'_>>,
    ) -> Decision {
        let f = self.faults.sent_by(from);
        if f.blackouts.iter().any(|&(a, b)| at >= a && at < b) {
            return Decision {
                dropped: Some("blackout"),
                ..Decision::default()
            };
        }
        let seed = self.faults.seed;
        let make = || {
            let mut mix = Rng(seed ^ (flow as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
            mix.0 ^= from as u64;
            Rng(mix.next())
        };
        let rng = self
            .streams
            .touch_or_insert_with(&(flow, from), make, |_, _| {});
        // Every datagram draws the same numbers whatever its fate, so that
        // one fault's outcome does not shift the others' streams.
        let (drop, dup, delay, reorder, corrupt) = (
            rng.chance(f.drop),
            rng.chance(f.dup),
            rng.chance(f.delay_pct),
            rng.chance(f.reorder),
            rng.chance(f.corrupt),
        );
        let hold = self.faults.reorder_max.as_micros() as u64;
        let hold = Duration::from_micros(1000 + rng.below(hold.saturating_sub(1000).max(1)));
        let bit = rng.next();
        if drop {
            return Decision {
                dropped: Some("drop"),
                ..Decision::default()
            };
        }
        let mut delay = if delay { f.delay } else { Duration::ZERO };
        if reorder {
            delay += hold;
        }
        let mut decision = Decision {
            copies: vec![delay],
            reordered: reorder,
            ..Decision::default()
        };
        if dup {
            decision.copies.push(delay);
        }
        if corrupt {
            decision.replacement = msg.and_then(|m| corrupted(m, bit));
        }
        decision
    }
}

/// `msg` re-encoded with one payload bit flipped and its checksum kept, so
/// that the receiver's checksum fails (or, for an empty payload, with the
/// checksum changed). Only Data carries a checksum: `None` for the rest.
fn corrupted(msg: &Message<'_>, bit: u64) -> Option<Vec<u8>> {
    if msg.kind != MsgType::Data {
        return None;
    }
    let mut bad = msg.clone().into_owned();
    let mut payload = bad.payload.to_vec();
    if payload.is_empty() {
        bad.checksum ^= 1 << (bit % 16);
    } else {
        let i = (bit >> 8) as usize % payload.len();
        payload[i] ^= 1 << (bit % 8);
        bad.payload = payload.into();
        // A one's-complement sum catches every single-bit error; make sure.
        if bad.clone().verify_data() {
            bad.checksum ^= 1;
        }
    }
    let mut out = Vec::new();
    bad.encode(&mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(f: DirFaults) -> Faults {
        Faults {
            to_server: f,
            seed: 7,
            reorder_max: Duration::from_millis(20),
            ..Faults::default()
        }
    }

    #[test]
    fn same_seed_same_fates_and_rates_are_about_right() {
        let f = faults(DirFaults {
            drop: 20.0,
            dup: 10.0,
            ..DirFaults::default()
        });
        let run = || {
            let mut m = FaultModel::new(f.clone());
            (0..10_000)
                .map(|i| m.decide(Duration::from_millis(i), 0, Side::Client, None))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let dropped = a.iter().filter(|d| d.dropped.is_some()).count();
        let dups = a.iter().filter(|d| d.copies.len() == 2).count();
        assert!((1700..2300).contains(&dropped), "{dropped}");
        assert!((600..1000).contains(&dups), "{dups}");
        // The other direction has no faults.
        let mut m = FaultModel::new(f);
        let d = m.decide(Duration::ZERO, 0, Side::Server, None);
        assert_eq!(d.copies, [Duration::ZERO]);
    }

    #[test]
    fn blackout_drops_everything_inside_it_only() {
        let mut m = FaultModel::new(faults(DirFaults {
            blackouts: vec![(Duration::from_secs(1), Duration::from_secs(2))],
            ..DirFaults::default()
        }));
        let at =
            |m: &mut FaultModel, ms| m.decide(Duration::from_millis(ms), 0, Side::Client, None);
        assert_eq!(at(&mut m, 999).dropped, None);
        assert_eq!(at(&mut m, 1000).dropped, Some("blackout"));
        assert_eq!(at(&mut m, 1999).dropped, Some("blackout"));
        assert_eq!(at(&mut m, 2000).dropped, None);
    }

    #[test]
    fn corruption_is_always_caught_by_the_checksum() {
        for (i, payload) in [&b""[..], b"x", b"hello world", &[0xff; 100]]
            .iter()
            .enumerate()
        {
            for bit in 0..200u64 {
                let msg = Message::data(3, 40 + i as u64, payload);
                let bytes = corrupted(&msg, bit.wrapping_mul(0x9E37_79B9)).unwrap();
                let mut back = Message::decode(&bytes).unwrap();
                assert_eq!(back.size, payload.len() as u64);
                assert!(!back.verify_data(), "{payload:?} bit {bit}");
            }
        }
        assert_eq!(corrupted(&Message::ack(1, 2), 5), None);
    }
}
