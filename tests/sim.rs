//! Deterministic simulation of the shipped cores (one `ServerCore`, a
//! `ClientCore` per client): exactly-once, in-order delivery (or a reported
//! loss) under any network, with the window, back-off, heartbeat,
//! loss-timing, close and memory invariants checked on every step, and the
//! table's: one live connection per address, the connection limit, what
//! every Connect must do (repeated, late, from a restarted client, refused),
//! one terminal state per connection and the order of every output. Besides
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
use simulator::{Scenario, Sim};

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

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_on_any_network(sc in scenarios()) {
        let line = sc.to_string();
        let result = std::panic::catch_unwind(|| Sim::new(&sc).run());
        if let Err(panic) = result {
            let why = panic.downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".into());
            panic!("{why}\nreplay: LIVESEQ_SIM_CASE='{line}' cargo test --release --test sim replay");
        }
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
/// the other clients finish their exchange.
#[test]
fn a_long_partition_is_reported_as_a_loss() {
    let sc: Scenario =
        "w=4,m=4,b=0,l=3,c=3,n=30,s=20,drop=0,dup=0,delay=0,de=0,corrupt=0,short=0,long=0,part=40,co=0,early=0,seed=5"
            .parse()
            .unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.lost >= 2, "client 0 and its server connection: {out:?}");
    assert!(out.drained >= 2, "the other clients drain: {out:?}");
}

/// Clients restart on their own address with a new ISN: the table ends
/// each old connection (Lost) as it admits the new one.
#[test]
fn restarted_clients_replace_their_connections() {
    let sc: Scenario =
        "w=4,m=4,b=1,l=4,c=4,n=10,s=20,drop=5,dup=20,delay=20,de=2,corrupt=0,short=0,long=0,part=0,co=1,early=0,seed=0,maxc=0,storm=0,restart=100,rc=0,ra=0,rclose=0"
            .parse()
            .unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.restarts >= 1 && out.replaced >= 1, "{out:?}");
    assert!(out.duplicate_connects >= 1, "{out:?}");
}

/// A storm of Connects from 30 addresses against `max_connections` 3:
/// refusals once per address per epoch, late duplicates ignored.
#[test]
fn a_connect_storm_against_the_connection_limit() {
    let sc: Scenario =
        "w=4,m=4,b=1,l=4,c=4,n=10,s=20,drop=5,dup=20,delay=20,de=2,corrupt=0,short=0,long=0,part=0,co=1,early=0,seed=0,maxc=3,storm=30,restart=0,rc=0,ra=0,rclose=0"
            .parse()
            .unwrap();
    let out = Sim::new(&sc).run();
    assert!(out.refused > 10 && out.admitted >= 4, "{out:?}");
    assert!(out.late_duplicates >= 1, "{out:?}");
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
