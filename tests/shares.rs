//! Fair shares of the server's memory budget, on the core with virtual
//! epochs: peers that hold what they are sent and never acknowledge it take
//! at most their share, a newcomer is admitted from the reserve and served
//! from its floor, and the hoarders end as slow consumers while an honest
//! peer that acknowledges, however slowly, is never ended for its share.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use liveseq::proto::{
    CoreError, Message, PolledServer, ServerConfig, ServerOutput, EVENT_COST, MESSAGE_OVERHEAD,
    RESERVE_DIVISOR,
};
use liveseq::{ConnId, Params, ServerEvent};

const EPOCH: Duration = Duration::from_millis(100);
const PAYLOAD: [u8; 100] = [9; 100];
const COST: usize = PAYLOAD.len() + MESSAGE_OVERHEAD;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), port)
}

/// Window 4, epoch limit 5, no back-off: a stall limit of 5 epochs.
fn config() -> ServerConfig {
    let params = Params {
        epoch_limit: 5,
        epoch_millis: 100,
        window_size: 4,
        max_unacked_messages: 4,
        max_backoff_interval: 0,
    };
    let mut c = ServerConfig::new(params);
    c.id_seed = None;
    // Two messages of floor each, and a budget of about a hundred messages.
    c.floor = 2 * COST;
    c.budget = 16 * 1024;
    c
}

fn drain(s: &mut PolledServer) -> (Vec<(SocketAddr, Message<'static>)>, Vec<ServerOutput>) {
    let sent = std::iter::from_fn(|| s.poll_transmit().map(|(to, m)| (to, m.into_owned())));
    let sent = sent.collect();
    (sent, std::iter::from_fn(|| s.poll_output()).collect())
}

/// Connects `from` (validated by a heartbeat) and returns its id.
fn join(s: &mut PolledServer, now: Instant, from: SocketAddr) -> ConnId {
    s.handle_message(now, from, Message::connect(100));
    let (sent, _) = drain(s);
    assert_eq!(sent.len(), 1, "{from} was not admitted");
    let id = sent[0].1.conn_id;
    s.handle_message(now, from, Message::ack(id, 0));
    drain(s);
    ConnId::from(id)
}

/// Writes to every one of `ids` in turn until each write is refused.
fn fill(s: &mut PolledServer, now: Instant, ids: &[ConnId]) -> usize {
    let mut written = 0;
    let mut open: Vec<ConnId> = ids.to_vec();
    while !open.is_empty() {
        open.retain(|&id| match s.write(now, id, &PAYLOAD) {
            Ok(()) => {
                written += 1;
                true
            }
            Err(CoreError::BudgetExhausted) => false,
            Err(other) => panic!("write to {id}: {other}"),
        });
    }
    drain(s);
    written
}

#[test]
fn hoarders_take_at_most_their_share_and_a_newcomer_is_served() {
    let mut now = Instant::now();
    let config = config();
    let mut s = PolledServer::new(config);
    let hoarders: Vec<ConnId> = (1..=4).map(|p| join(&mut s, now, addr(p))).collect();
    // Nobody contends yet: they may fill everything but the reserve.
    let written = fill(&mut s, now, &hoarders);
    let t = s.totals();
    let shared = config.budget - config.budget / RESERVE_DIVISOR;
    assert_eq!(config.shared_budget(), shared);
    assert!(t.budget_in_use <= shared, "{t:?}");
    assert!(shared - t.budget_in_use < COST, "{t:?}");
    assert_eq!(t.budget_refusals, 4);
    assert!(written > 4 * 2, "{written}");

    // The reserve admits a newcomer, and its floor serves it.
    let newcomer = addr(9);
    let id = join(&mut s, now, newcomer);
    assert_eq!(s.totals().refused, 0);
    s.write(now, id, &PAYLOAD).unwrap();
    let (sent, _) = drain(&mut s);
    assert_eq!(sent, [(newcomer, Message::data(id.into(), 101, &PAYLOAD))]);
    s.handle_message(now, newcomer, Message::ack(id.into(), 101));
    s.write(now, id, &PAYLOAD).unwrap();
    drain(&mut s);

    // The hoarders heartbeat and acknowledge nothing: after their stall
    // limit they are slow consumers, and the budget is free again.
    let stall_limit = s.core().conn(hoarders[0]).unwrap().stall_limit();
    for epoch in 1..=stall_limit {
        now += EPOCH;
        for (i, &h) in hoarders.iter().enumerate() {
            s.handle_message(now, addr(i as u16 + 1), Message::ack(h.into(), 0));
        }
        s.handle_message(now, newcomer, Message::ack(id.into(), 102));
        s.handle_epoch(now);
        let (_, outs) = drain(&mut s);
        let ended = outs
            .iter()
            .filter(|o| matches!(o, ServerOutput::App(ServerEvent::Lost { .. })))
            .count();
        assert_eq!(
            ended,
            if epoch == stall_limit { 4 } else { 0 },
            "epoch {epoch}"
        );
    }
    let t = s.totals();
    assert_eq!((t.slow_consumers, t.lost, t.active), (4, 4, 1), "{t:?}");
    assert_eq!(s.connections(), [id]);
    // All that is left in use: the events this test never reads (each of
    // five connections' Connected and terminal event); the newcomer's
    // message is within its floor.
    assert_eq!(t.budget_in_use, 10 * EVENT_COST, "{t:?}");
}

#[test]
fn a_connection_that_acknowledges_slowly_is_never_ended_for_its_share() {
    let mut now = Instant::now();
    let mut s = PolledServer::new(config());
    let hoarders: Vec<ConnId> = (1..=3).map(|p| join(&mut s, now, addr(p))).collect();
    let slow = join(&mut s, now, addr(8));
    let mut all = hoarders.clone();
    all.push(slow);
    fill(&mut s, now, &all);
    // The slow reader acknowledges one message every other epoch, far
    // slower than its writer writes; the hoarders none.
    let mut next = 101u64;
    let stall_limit = s.core().conn(slow).unwrap().stall_limit();
    for epoch in 1..=3 * stall_limit {
        now += EPOCH;
        if epoch % 2 == 0 {
            s.handle_message(now, addr(8), Message::ack(slow.into(), next));
            next += 1;
        }
        for (i, &h) in hoarders.iter().enumerate() {
            s.handle_message(now, addr(i as u16 + 1), Message::ack(h.into(), 0));
        }
        // Its application keeps writing, and is refused past its share.
        match s.write(now, slow, &PAYLOAD) {
            Ok(()) | Err(CoreError::BudgetExhausted) => {}
            Err(other) => panic!("{other}"),
        }
        s.handle_epoch(now);
        drain(&mut s);
    }
    let t = s.totals();
    assert_eq!(t.slow_consumers, 3, "{t:?}");
    assert_eq!(s.connections(), [slow]);
}

#[test]
fn small_users_keep_what_they_hold_under_contention() {
    let now = Instant::now();
    let mut config = config();
    config.floor = 0;
    let mut s = PolledServer::new(config);
    let small = join(&mut s, now, addr(1));
    let big: Vec<ConnId> = (2..=3).map(|p| join(&mut s, now, addr(p))).collect();
    // The small one holds three messages and wants no more.
    for _ in 0..3 {
        s.write(now, small, &PAYLOAD).unwrap();
    }
    fill(&mut s, now, &big);
    let before = s.totals().budget_in_use;
    let mut now = now + EPOCH;
    s.handle_epoch(now);
    drain(&mut s);
    // Under contention the big ones are capped at an even split of what the
    // small one leaves: neither may take more, though one frees room.
    s.handle_message(now, addr(2), Message::ack(big[0].into(), 101));
    drain(&mut s);
    assert!(matches!(
        s.write(now, big[1], &PAYLOAD),
        Err(CoreError::BudgetExhausted)
    ));
    // The small one still writes within what it held, after acknowledging.
    s.handle_message(now, addr(1), Message::ack(small.into(), 101));
    s.write(now, small, &PAYLOAD).unwrap();
    now += EPOCH;
    s.handle_epoch(now);
    assert!(s.totals().budget_in_use <= before);
}

/// Hoarders took everything before anyone contended; once a share is set, a
/// reader still under it may draw on the reserve (all but the admissions'
/// part), so it is served beyond its floor at once, not only once the
/// hoarders end.
#[test]
fn a_connection_under_its_share_draws_on_the_reserve() {
    let now = Instant::now();
    let mut config = config();
    config.floor = 0;
    let mut s = PolledServer::new(config);
    let reader = join(&mut s, now, addr(9));
    let hoarders: Vec<ConnId> = (1..=4).map(|p| join(&mut s, now, addr(p))).collect();
    fill(&mut s, now, &hoarders);
    // No share yet, and the budget less the reserve is spent: refused.
    assert!(matches!(
        s.write(now, reader, &PAYLOAD),
        Err(CoreError::BudgetExhausted)
    ));
    s.handle_epoch(now + EPOCH);
    drain(&mut s);
    // The reader is under its share now: the reserve takes its writes, up
    // to the admissions' part of the budget.
    let mut written = 0;
    while s.write(now, reader, &PAYLOAD).is_ok() {
        written += 1;
    }
    let in_use = s.totals().budget_in_use;
    assert!(written >= 4, "{written}");
    assert!(in_use <= config.under_share_budget(), "{in_use}");
    assert!(config.under_share_budget() - in_use < COST, "{in_use}");
    drain(&mut s);
    // Admissions still find their part.
    join(&mut s, now, addr(20));
    // The hoarders, over their share, may not take the reserve.
    assert!(matches!(
        s.write(now, hoarders[0], &PAYLOAD),
        Err(CoreError::BudgetExhausted)
    ));
}
