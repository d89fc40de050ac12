//! The checker's own tests: scripted traffic on one connection, and
//! hostile traffic that must never make it panic.

use super::timers::{required_epochs, stall_within};
use super::*;

const E: Duration = Duration::from_millis(100);
const J: Duration = Duration::from_millis(30);

fn params(max_backoff: u32) -> CheckParams {
    CheckParams {
        epoch: E,
        epoch_limit: 5,
        window: 4,
        max_unacked: 4,
        max_backoff,
        jitter: J,
    }
}

/// A checker with one connection (id 7, ISN 100) set up and validated
/// at time zero, and a counter for datagram numbers.
struct Script {
    c: Checker,
    n: usize,
}

impl Script {
    fn new(max_backoff: u32) -> Script {
        let mut s = Script {
            c: Checker::new(params(max_backoff)),
            n: 0,
        };
        let z = Duration::ZERO;
        s.both(z, Side::Client, &Message::connect(100));
        s.both(z, Side::Server, &Message::ack(7, 100));
        s.both(z, Side::Client, &Message::ack(7, 0));
        s
    }

    /// Sent and delivered at once; returns the rules broken.
    fn both(&mut self, at: Duration, from: Side, msg: &Message<'_>) -> Vec<Rule> {
        let seen = self.c.sent(at, 0, from, self.n, Ok(msg));
        self.n += 1;
        self.c.delivered(at, 0, from.other(), Ok(msg));
        seen.violations.iter().map(|v| v.rule).collect()
    }

    /// Sent, and dropped by the proxy.
    fn lost(&mut self, at: Duration, from: Side, msg: &Message<'_>) -> Vec<Rule> {
        let seen = self.c.sent(at, 0, from, self.n, Ok(msg));
        self.n += 1;
        seen.violations.iter().map(|v| v.rule).collect()
    }
}

#[test]
fn a_connect_ack_is_told_from_a_heartbeat() {
    let z = Duration::ZERO;
    let mut c = Checker::new(params(0));
    let connect = Message::connect(0);
    assert!(!c.sent(z, 0, Side::Client, 0, Ok(&connect)).connect_ack);
    c.delivered(z, 0, Side::Server, Ok(&connect));
    // With ISN 0 the answer is (Ack, id, 0), like a heartbeat.
    assert!(
        c.sent(z, 0, Side::Server, 1, Ok(&Message::ack(3, 0)))
            .connect_ack
    );
    // The client's heartbeat is not one.
    assert!(
        !c.sent(z, 0, Side::Client, 2, Ok(&Message::ack(3, 0)))
            .connect_ack
    );
}

#[test]
fn back_off_schedule_matches_spec() {
    // A message first sent in epoch 0 and never acknowledged is resent
    // in epochs 1, 3, 6, 11, 20 (cap large): 2, 3, 5, 9 epochs apart.
    let gaps: Vec<u64> = (2..6).map(|j| required_epochs(64, j - 1, j)).collect();
    assert_eq!(gaps, [2, 3, 5, 9]);
    assert_eq!(required_epochs(64, 1, 5), 19);
    assert_eq!(required_epochs(0, 1, 5), 4); // cap 0: every epoch
    assert_eq!(required_epochs(2, 1, 5), 2 + 3 + 3 + 3);
}

#[test]
fn retransmissions_are_judged_against_the_schedule_less_jitter() {
    let ms = Duration::from_millis;
    let data = Message::data(7, 101, b"x");
    // On schedule with max back-off 4, each resend as late as the jitter allows.
    let mut s = Script::new(4);
    let mut t = ms(10);
    assert_eq!(s.lost(t, Side::Client, &data), []);
    t += ms(1); // the first resend may follow at once (the next tick)
    assert_eq!(s.lost(t, Side::Client, &data), []);
    for gap in [2u32, 3, 5, 5] {
        // The server heartbeats every epoch meanwhile, so the client
        // owes none.
        for k in 1..gap {
            s.both(t + E * k, Side::Server, &Message::ack(7, 0));
        }
        t += E * gap - J;
        assert_eq!(s.lost(t, Side::Client, &data), [], "gap {gap}");
        t += J; // back on the grid for the next one
    }
    // One millisecond sooner than that is caught.
    let mut s = Script::new(4);
    s.lost(ms(10), Side::Client, &data);
    s.lost(ms(11), Side::Client, &data);
    let early = ms(11) + E * 2 - J - ms(1);
    assert_eq!(s.lost(early, Side::Client, &data), [Rule::EarlyRetransmit]);
}

#[test]
fn silence_and_loss_boundaries() {
    let ms = Duration::from_millis;
    // Silent both ways for exactly 2 epochs + jitter: allowed; 1 ms more: not.
    let mut s = Script::new(0);
    assert_eq!(s.both(E * 2 + J, Side::Client, &Message::ack(7, 0)), []);
    let mut s = Script::new(0);
    assert_eq!(
        s.both(E * 2 + J + ms(1), Side::Client, &Message::ack(7, 0)),
        [Rule::Silent]
    );
    // Hearing something resets the silence.
    let mut s = Script::new(0);
    s.both(E * 2, Side::Server, &Message::ack(7, 0));
    assert_eq!(s.both(E * 4, Side::Client, &Message::ack(7, 0)), []);

    // The client keeps talking but hears nothing (everything the server
    // sends is dropped): epoch_limit epochs + jitter after it last heard
    // it must be gone.
    let mut s = Script::new(0);
    let mut t = Duration::ZERO;
    while t < E * 5 + J {
        assert_eq!(s.lost(t, Side::Server, &Message::ack(7, 0)), []);
        assert_eq!(s.both(t, Side::Client, &Message::ack(7, 0)), []);
        t += E;
    }
    assert_eq!(s.both(E * 5 + J, Side::Client, &Message::ack(7, 0)), []);
    assert_eq!(
        s.both(E * 5 + J + ms(1), Side::Client, &Message::ack(7, 0)),
        [Rule::AfterLost]
    );
    // Reported once per connection and side.
    assert_eq!(s.both(E * 6, Side::Client, &Message::ack(7, 0)), []);
}

#[test]
fn the_proxy_held_up_excuses_that_long() {
    let ms = Duration::from_millis;
    let late = E * 2 + J + ms(50);
    let mut s = Script::new(0);
    assert_eq!(
        s.both(late, Side::Client, &Message::ack(7, 0)),
        [Rule::Silent]
    );
    let mut s = Script::new(0);
    s.c.stalled(ms(100), ms(160));
    assert_eq!(s.both(late, Side::Client, &Message::ack(7, 0)), []);
    assert_eq!(s.c.stalls(), (1, ms(60)));
    // A stall outside the stretch judged excuses nothing.
    let mut s = Script::new(0);
    s.c.stalled(late + ms(1), late + ms(100));
    assert_eq!(
        s.both(late, Side::Client, &Message::ack(7, 0)),
        [Rule::Silent]
    );
    assert_eq!(
        stall_within(&[(ms(0), ms(10)), (ms(20), ms(40))], ms(5), ms(30)),
        ms(15)
    );
}

#[test]
fn window_is_anchored_at_the_oldest_ack_the_sender_can_have_seen() {
    let z = Duration::ZERO;
    let mut s = Script::new(0);
    for sn in 101..=104 {
        assert_eq!(s.both(z, Side::Client, &Message::data(7, sn, b"x")), []);
    }
    // 102-104 acknowledged, but the Ack of 102 was dropped by the proxy:
    // the client may still count 102 as in flight, and 101 anchors the window.
    s.lost(z, Side::Server, &Message::ack(7, 102));
    s.both(z, Side::Server, &Message::ack(7, 103));
    s.both(z, Side::Server, &Message::ack(7, 104));
    assert_eq!(
        s.both(z, Side::Client, &Message::data(7, 105, b"x")),
        [Rule::BeyondWindow]
    );
    // A CAck of 102 delivered moves it to 105: up to 108, two in flight.
    s.both(z, Side::Server, &Message::cack(7, 102));
    assert_eq!(s.both(z, Side::Client, &Message::data(7, 108, b"x")), []);
}

/// Random traffic with extreme values in every field, in any order, from
/// any side, delivered or not, at any time: the checker never panics
/// (debug builds check every addition), whatever it reports.
#[test]
fn hostile_traffic_never_panics() {
    let mut rng = crate::faults::Rng(0x1234_5678);
    let mut next = move || rng.next();
    let extremes = [
        0,
        1,
        2,
        99,
        100,
        101,
        102,
        u64::from(u32::MAX),
        i64::MAX as u64 - 1,
        i64::MAX as u64,
        u64::MAX,
    ];
    for (epoch_limit, max_backoff, window) in [(1, 0, 1), (5, 8, 4), (u32::MAX, u32::MAX, u64::MAX)]
    {
        let mut c = Checker::new(CheckParams {
            epoch: E,
            epoch_limit,
            window,
            max_unacked: window,
            max_backoff,
            jitter: J,
        });
        let mut at = Duration::ZERO;
        for i in 0..20_000 {
            let pick = |r: u64| extremes[(r % extremes.len() as u64) as usize];
            let seq = if next() % 2 == 0 {
                pick(next())
            } else {
                100 + next() % 20
            };
            let id = [0, 1, 7, u32::MAX][(next() % 4) as usize];
            let payload = vec![0xA5; (next() % 4) as usize];
            let mut msg = match next() % 5 {
                0 => Message::connect(seq),
                1 => Message::ack(id, seq),
                2 => Message::cack(id, seq),
                _ => Message::data(id, seq, &payload),
            };
            if next() % 8 == 0 {
                msg.size = pick(next());
            }
            if next() % 8 == 0 {
                msg.checksum ^= 1;
            }
            let from = if next() % 2 == 0 {
                Side::Client
            } else {
                Side::Server
            };
            let flow = (next() % 3) as usize;
            at += Duration::from_millis(next() % 80);
            if next() % 50 == 0 {
                c.stalled(at.saturating_sub(E), at);
            }
            c.sent(at, flow, from, i, Ok(&msg));
            if next() % 3 != 0 {
                c.delivered(at, flow, from.other(), Ok(&msg));
            }
        }
    }
}
