//! Deterministic simulation of the shipped cores (one `ServerCore`, a
//! `ClientCore` per client): exactly-once, in-order delivery (or a reported
//! loss) under any network, with the window, back-off, heartbeat,
//! loss-timing, close and memory invariants checked on every step, and the
//! table's: one live connection per address, the connection limit, what
//! every Connect must do (repeated, late, challenging, evicting, refused),
//! one terminal state per connection and the order of every output, a
//! Connect with another ISN challenging the live connection at its address
//! (RFC 5961), unvalidated connections evicted oldest first, and at most
//! three times the bytes received sent to an unvalidated address. Besides
//! the network's faults, scenarios have a connection limit, storms of raw
//! Connects, clients that restart on their address, and reconnecting
//! clients that may close while reconnecting. See `tests/simulator/mod.rs`.
//!
//! `cargo test --release --test sim` runs 2,000 generated scenarios
//! (`LIVESEQ_SIM_SEEDS=N` for more). A failure prints the scenario as one
//! line; replay it with
//! `LIVESEQ_SIM_CASE='w=...,seed=...' cargo test --release --test sim replay`.
//! proptest shrinks a failing scenario to a minimal one first.

mod simulator;

use proptest::prelude::*;
use simulator::{undetectable_damage, Scenario, Sim};

fn scenarios() -> impl Strategy<Value = Scenario> {
    (1u32..=64, 0u32..=8, 2u32..=10)
        .prop_flat_map(|(window, max_backoff, epoch_limit)| {
            (
                Just(window),
                1..=window,
                Just(max_backoff),
                Just(epoch_limit),
                (1usize..=4, 0usize..=30, 0usize..=64),
                (0u8..=40, 0u8..=20, 0u8..=40, 0u64..=3),
                (
                    0u8..=20,
                    0u8..=20,
                    0u8..=20,
                    prop_oneof![4 => Just(0u64), 1 => 1u64..=15],
                ),
                (any::<bool>(), 0u8..=30, any::<u64>()),
                (
                    prop_oneof![3 => Just(0usize), 1 => 1usize..=4],
                    prop_oneof![3 => Just(0usize), 1 => 1usize..=40],
                    prop_oneof![3 => Just(0u8), 1 => 1u8..=60],
                    prop_oneof![2 => Just(0u64), 1 => 1u64..=4],
                    0u32..=3,
                    prop_oneof![2 => Just(0u8), 1 => 1u8..=5],
                ),
            )
        })
        .prop_map(
            |(
                window,
                max_unacked,
                max_backoff,
                epoch_limit,
                (clients, messages, max_size),
                (drop, duplicate, delay, max_delay_epochs),
                (corrupt, shorten, lengthen, partition_epochs),
                (coalesce, early_close, seed),
                (max_connections, storm, restart, reconnect_epochs, max_attempts, reconnect_close),
            )| Scenario {
                window,
                max_unacked,
                max_backoff,
                epoch_limit,
                clients,
                messages,
                max_size,
                drop,
                duplicate,
                delay,
                max_delay_epochs,
                corrupt,
                shorten,
                lengthen,
                partition_epochs,
                coalesce,
                early_close,
                seed,
                max_connections,
                storm,
                restart,
                reconnect_epochs,
                max_attempts,
                reconnect_close,
            },
        )
}

fn cases() -> u32 {
    std::env::var("LIVESEQ_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

/// Every generated scenario runs to its end with every invariant holding.
/// Ends with a summary line on stderr (printed even when the output is
/// captured): how many scenarios ran, and how much damage slipped past the
/// checksum (LSP's limit: such deliveries are exempt from the content check).
#[test]
fn invariants_hold_on_any_network() {
    use proptest::test_runner::{TestCaseError, TestError, TestRunner};
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    let ran = AtomicU64::new(0);
    let undetectable = AtomicU64::new(0);
    let damaged_deliveries = AtomicU64::new(0);
    let challenged = AtomicU64::new(0);
    let answered = AtomicU64::new(0);
    let challenge_ends = AtomicU64::new(0);
    let evicted = AtomicU64::new(0);
    let held_bytes = AtomicU64::new(0);
    let stalled = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let result = TestRunner::new(config).run(&scenarios(), |sc| {
        ran.fetch_add(1, Relaxed);
        let line = sc.to_string();
        let out = std::panic::catch_unwind(|| Sim::new(&sc).run()).map_err(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".into());
            TestCaseError::fail(format!(
                "{why}\nreplay: LIVESEQ_SIM_CASE='{line}' cargo test --release --test sim replay"
            ))
        })?;
        undetectable.fetch_add(out.undetectable_damage, Relaxed);
        damaged_deliveries.fetch_add(out.damaged_deliveries as u64, Relaxed);
        challenged.fetch_add(out.challenged as u64, Relaxed);
        answered.fetch_add(out.challenges_answered as u64, Relaxed);
        challenge_ends.fetch_add(out.challenge_ends as u64, Relaxed);
        evicted.fetch_add(out.evicted as u64, Relaxed);
        held_bytes.fetch_add(out.amplification_held_bytes, Relaxed);
        stalled.fetch_add(out.stalled_closes as u64, Relaxed);
        Ok(())
    });
    let _ = writeln!(
        std::io::stderr(),
        "invariants_hold_on_any_network: {} scenarios run (shrinking included); \
         {} damaged datagrams the checksum cannot see, {} deliveries of such damage; \
         {} challenges ({} answered, {} ended unanswered), {} unvalidated connections evicted, \
         {} bytes held back by anti-amplification, {} stalled closes",
        ran.load(Relaxed),
        undetectable.load(Relaxed),
        damaged_deliveries.load(Relaxed),
        challenged.load(Relaxed),
        answered.load(Relaxed),
        challenge_ends.load(Relaxed),
        evicted.load(Relaxed),
        held_bytes.load(Relaxed),
        stalled.load(Relaxed),
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, sc)) => panic!("{why}\nminimal scenario: {sc}"),
        Err(e) => panic!("{e}"),
    }
}

/// Replays the scenario in `LIVESEQ_SIM_CASE` (does nothing without it).
#[test]
fn replay() {
    if let Ok(line) = std::env::var("LIVESEQ_SIM_CASE") {
        let sc: Scenario = line
            .parse()
            .expect("a scenario line as printed by a failure");
        let outcome = Sim::new(&sc).run();
        println!("{outcome:?}");
    }
}

/// The same scenario always plays out the same way.
#[test]
fn runs_are_deterministic() {
    let sc: Scenario =
        "w=8,m=4,b=2,l=6,c=3,n=25,s=40,drop=25,dup=10,delay=20,de=2,corrupt=5,short=5,long=5,part=0,co=1,early=10,seed=99"
            .parse()
            .unwrap();
    let (a, b) = (Sim::new(&sc).run(), Sim::new(&sc).run());
    assert_eq!(
        (a.ticks, a.delivered, a.lost, a.retransmissions),
        (b.ticks, b.delivered, b.lost, b.retransmissions)
    );
    assert!(a.retransmissions > 0 && a.delivered > 0);
}

/// A perfect network: everything arrives and both ends of every connection
/// drain (each side closes once it has written and read everything).
#[test]
fn perfect_network_delivers_everything() {
    for (w, m) in [(1, 1), (4, 2), (32, 32)] {
        let sc = Scenario {
            window: w,
            max_unacked: m,
            max_backoff: 0,
            epoch_limit: 5,
            clients: 4,
            messages: 30,
            max_size: 50,
            drop: 0,
            duplicate: 0,
            delay: 0,
            max_delay_epochs: 0,
            corrupt: 0,
            shorten: 0,
            lengthen: 0,
            partition_epochs: 0,
            coalesce: w > 1,
            early_close: 0,
            seed: u64::from(w),
            max_connections: 0,
            storm: 0,
            restart: 0,
            reconnect_epochs: 0,
            max_attempts: 0,
            reconnect_close: 0,
        };
        let out = Sim::new(&sc).run();
        assert_eq!(out.delivered, 2 * 4 * 30, "{sc}");
        assert_eq!(
            (out.drained, out.lost),
            (8, 0),
            "both ends of all four connections drain: {sc}"
        );
    }
}

/// A long partition of client 0 ends in a loss, reported on both sides, and
/// the other clients finish their exchange. (300 messages each: the
/// partition starts within the first 20 epochs, and the exchange must still
/// be under way then; 30 were done before it once clients validated their
/// address at once.)
#[test]
fn a_long_partition_is_reported_as_a_loss() {
    let sc: Scenario =
        "w=4,m=4,b=0,l=3,c=3,n=300,s=20,drop=0,dup=0,delay=0,de=0,corrupt=0,short=0,long=0,part=40,co=0,early=0,seed=5"
            .parse()
            .unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.lost >= 2, "client 0 and its server connection: {out:?}");
    assert!(out.drained >= 2, "the other clients drain: {out:?}");
}

/// Clients restart on their own address with a new ISN: their Connect
/// challenges the old connection, which nobody answers, so it ends Lost
/// two epochs later and a resent Connect is admitted.
#[test]
fn restarted_clients_challenge_then_replace_their_connections() {
    let sc: Scenario =
        "w=4,m=4,b=1,l=4,c=4,n=10,s=20,drop=5,dup=20,delay=20,de=2,corrupt=0,short=0,long=0,part=0,co=1,early=0,seed=0,maxc=0,storm=0,restart=100,rc=0,ra=0,rclose=0"
            .parse()
            .unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.restarts >= 1 && out.challenged >= 1, "{out:?}");
    assert!(out.challenge_ends >= 1, "{out:?}");
    assert!(out.duplicate_connects >= 1, "{out:?}");
}

/// A storm of Connects from 30 addresses against `max_connections` 3:
/// the storm's connections are never validated, so each new Connect
/// evicts the oldest of them (the simulator checks which, and that no
/// validated connection makes way); late duplicates are ignored. With
/// reconnecting clients and two slots, validated connections fill the
/// table: refusals, once per address per epoch.
#[test]
fn a_connect_storm_against_the_connection_limit() {
    let sc: Scenario =
        "w=4,m=4,b=1,l=4,c=4,n=10,s=20,drop=5,dup=20,delay=20,de=2,corrupt=0,short=0,long=0,part=0,co=1,early=0,seed=0,maxc=3,storm=30,restart=0,rc=0,ra=0,rclose=0"
            .parse()
            .unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.evicted > 10 && out.admitted >= 4, "{out:?}");
    assert!(out.late_duplicates >= 1, "{out:?}");
    let sc: Scenario =
        "w=4,m=4,b=1,l=4,c=6,n=30,s=20,drop=5,dup=20,delay=20,de=2,corrupt=0,short=0,long=0,part=0,co=1,early=0,seed=0,maxc=2,storm=30,restart=0,rc=2,ra=3,rclose=0"
            .parse()
            .unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.refused > 10 && out.evicted > 10, "{out:?}");
}

/// Clients that reconnect after a partition and losses; then the same with
/// closes racing the reconnects (while waiting to redial, or dialling).
#[test]
fn reconnects_and_closes_racing_them() {
    let line = "w=4,m=4,b=1,l=2,c=3,n=30,s=20,drop=20,dup=10,delay=10,de=1,corrupt=0,short=0,long=0,part=20,co=1,early=0,maxc=0,storm=0,restart=0,rc=2,ra=3";
    let sc: Scenario = format!("{line},seed=3,rclose=0").parse().unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.reconnects >= 5 && out.reconnected >= 3, "{out:?}");
    let sc: Scenario = format!("{line},seed=8,rclose=30").parse().unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.closes_while_reconnecting >= 2, "{out:?}");
}

/// The simulator's model of LSP's integrity rules: which damage the receiver
/// catches, which it undoes, and which slips through the checksum.
#[test]
fn damage_model_follows_the_integrity_rules() {
    use liveseq::proto::Message;
    let payload = [0x01, 0x02, 0x00, 0x00, 0x03, 0x04, 0x05, 0x06];
    let sent = Message::data(3, 77, &payload);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = payload.to_vec();
        f(&mut p);
        undetectable_damage(&sent, &p)
    };
    // Shorter than Size: dropped. Longer: cut back to what was sent.
    assert_eq!(with(&|p| p.truncate(7)), None);
    assert_eq!(with(&|p| p.extend_from_slice(b"extra")), None);
    // A flipped bit is always caught, before or after a cut.
    assert_eq!(with(&|p| p[3] ^= 0x10), None);
    assert_eq!(with(&|p| p.push(0xFF)), None);
    // Swapped words, 0x0000 -> 0xFFFF, -1 and +1 in two words: the sum
    // cannot see them, and the receiver gets the damaged bytes.
    let swapped = [0x03, 0x04, 0x00, 0x00, 0x01, 0x02, 0x05, 0x06];
    assert_eq!(
        with(&|p| p.copy_from_slice(&swapped)),
        Some(swapped.to_vec())
    );
    assert!(with(&|p| p[2..4].copy_from_slice(&[0xFF, 0xFF])).is_some());
    assert!(with(&|p| {
        p[0] -= 1;
        p[6] += 1;
    })
    .is_some());
    // Shortened, then lengthened back past Size with the bytes that cancel
    // out: what the failing scenario of issue 9 hit.
    let cut_and_refilled = with(&|p| {
        p.truncate(4);
        p.extend_from_slice(&[0x05, 0x06, 0x03, 0x04, 0xAA]);
    });
    assert_eq!(
        cut_and_refilled,
        Some(vec![0x01, 0x02, 0x00, 0x00, 0x05, 0x06, 0x03, 0x04])
    );
}
