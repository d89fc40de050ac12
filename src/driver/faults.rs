//! Per-instance fault injection, for testing behaviour on a bad network.
//!
//! Only with the `test-hooks` feature (the crate's own tests and examples
//! turn it on): without it [`Injector`] has no values, so the send and
//! receive paths' fault branches are dead code the compiler removes, and a
//! user's build carries no injector.

use std::time::Duration;

#[cfg(feature = "test-hooks")]
use {
    crate::proto::MsgType,
    parking_lot::Mutex,
    rand::rngs::SmallRng,
    rand::{Rng, SeedableRng},
    std::borrow::Cow,
};

use crate::proto::Message;

/// Faults a client or server injects into its own traffic.
///
/// Each instance has its own settings and random generator (no global state),
/// so tests with different faults can run in parallel. Percentages are clamped
/// to 100.
///
/// * `read_drop_percent` / `write_drop_percent`: drop received / sent datagrams of any type.
/// * `shorten_percent`: cut bytes off a sent Data payload, keeping `Size` (the receiver must drop it).
/// * `lengthen_percent`: append bytes to a sent Data payload, keeping `Size` (the receiver must truncate).
/// * `corrupt_percent`: flip the first byte of a sent Data payload, keeping `Checksum` (the receiver must drop it).
/// * `delay_percent`: hold a sent datagram back for a random time of up to two epochs (this reorders).
/// * `duplicate_percent`: send a datagram twice.
/// * `reorder_percent`: hold a datagram back until after the next one is sent
///   (or the next epoch, if nothing else is sent).
/// * `seed`: seed of the random generator, for repeatable runs (random when `None`).
///
/// # Examples
///
/// ```
/// use liveseq::Faults;
///
/// let lossy = Faults { read_drop_percent: 20, write_drop_percent: 20, seed: Some(7), ..Faults::default() };
/// assert!(lossy.is_active());
/// assert!(!Faults::default().is_active());
/// ```
///
/// A test hook (the `test-hooks` feature), hidden from the documentation:
/// the `faults` methods of the builders take it.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Percent of received datagrams dropped.
    pub read_drop_percent: u8,
    /// Percent of sent datagrams dropped.
    pub write_drop_percent: u8,
    /// Percent of sent Data messages whose payload is shortened.
    pub shorten_percent: u8,
    /// Percent of sent Data messages whose payload is lengthened.
    pub lengthen_percent: u8,
    /// Percent of sent Data messages whose payload is corrupted.
    pub corrupt_percent: u8,
    /// Percent of sent datagrams delayed by up to two epochs.
    pub delay_percent: u8,
    /// Percent of sent datagrams sent twice.
    pub duplicate_percent: u8,
    /// Percent of sent datagrams held back behind the next one.
    pub reorder_percent: u8,
    /// Seed for the fault generator; `None` picks one at random.
    pub seed: Option<u64>,
}

// Without the `test-hooks` feature nothing builds an injector.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
impl Faults {
    /// Whether any fault is switched on.
    pub fn is_active(&self) -> bool {
        self.read_drop_percent
            | self.write_drop_percent
            | self.shorten_percent
            | self.lengthen_percent
            | self.corrupt_percent
            | self.delay_percent
            | self.duplicate_percent
            | self.reorder_percent
            != 0
    }
}

/// What to do with one outgoing datagram.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub(crate) enum Plan<'m> {
    Drop,
    Send {
        /// A mangled replacement for the message.
        msg: Option<Message<'m>>,
        delay: Option<Duration>,
        duplicate: bool,
        /// Hold it until the next datagram has been sent.
        reorder: bool,
    },
}

/// The live injector of one instance.
#[cfg(feature = "test-hooks")]
pub(crate) struct Injector {
    faults: Faults,
    /// Lock `fault dice`.
    rng: Mutex<SmallRng>,
}

/// Without the `test-hooks` feature there is no injector: `Option<Injector>`
/// is always `None`, and the branches that use one are never compiled in.
#[cfg(not(feature = "test-hooks"))]
pub(crate) enum Injector {}

#[cfg(not(feature = "test-hooks"))]
impl Injector {
    pub(crate) fn new(_: Faults) -> Option<Injector> {
        None
    }

    pub(crate) fn drop_read(&self) -> bool {
        match *self {}
    }

    pub(crate) fn plan<'m>(&self, _: &Message<'_>, _: Duration) -> Plan<'m> {
        match *self {}
    }
}

#[cfg(feature = "test-hooks")]
impl Injector {
    /// `None` when no fault is active, so the fast path pays nothing.
    pub(crate) fn new(faults: Faults) -> Option<Injector> {
        faults.is_active().then(|| Injector {
            faults,
            rng: Mutex::new(match faults.seed {
                Some(seed) => SmallRng::seed_from_u64(seed),
                None => SmallRng::from_entropy(),
            }),
        })
    }

    pub(crate) fn drop_read(&self) -> bool {
        chance(&mut self.rng.lock(), self.faults.read_drop_percent)
    }

    /// Decides the fate of `msg`; a returned message replaces it.
    pub(crate) fn plan<'m>(&self, msg: &Message<'_>, epoch: Duration) -> Plan<'m> {
        let f = &self.faults;
        let mut rng = self.rng.lock();
        if chance(&mut rng, f.write_drop_percent) {
            return Plan::Drop;
        }
        let mut mangled = None;
        if msg.kind == MsgType::Data {
            let mut payload = msg.payload.to_vec();
            let mut changed = false;
            if !payload.is_empty() && chance(&mut rng, f.shorten_percent) {
                payload.truncate(rng.gen_range(0..payload.len()));
                changed = true;
            }
            if chance(&mut rng, f.lengthen_percent) {
                let extra = rng.gen_range(1..=8);
                payload.extend((0..extra).map(|_| rng.r#gen::<u8>()));
                changed = true;
            }
            if !payload.is_empty() && chance(&mut rng, f.corrupt_percent) {
                payload[0] ^= 0xFF;
                changed = true;
            }
            if changed {
                mangled = Some(Message {
                    payload: Cow::Owned(payload),
                    ..msg.clone().into_owned()
                });
            }
        }
        let delay =
            chance(&mut rng, f.delay_percent).then(|| epoch.mul_f64(rng.gen_range(0.0..2.0)));
        let duplicate = chance(&mut rng, f.duplicate_percent);
        let reorder = chance(&mut rng, f.reorder_percent);
        Plan::Send {
            msg: mangled,
            delay,
            duplicate,
            reorder,
        }
    }
}

#[cfg(feature = "test-hooks")]
fn chance(rng: &mut SmallRng, percent: u8) -> bool {
    percent > 0 && rng.gen_range(0..100u8) < percent.min(100)
}
