//! The server's receive path (connection table, address binding, admission,
//! challenges, the state machines) fed arbitrary datagrams from arbitrary
//! sources, with epochs, batch ends, writes, reads and closes between them.
//!
//! It drives the I/O-free core, [`PolledServer`], on virtual time: an
//! `Instant` fixed once, advanced only by the input, and a fixed seed for the
//! connection ids. Nothing depends on the real clock, a socket or a thread,
//! so a crash replays from its input alone (quinn fuzzes its protocol code
//! the same way, without the endpoint's I/O).
//!
//! Input: operations, one byte each plus what that operation reads; missing
//! bytes read as zero.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use liveseq::proto::{PolledServer, ServerConfig, ServerEvent, ServerOutput};
use liveseq::Params;

const MAX_CONNECTIONS: usize = 16;
/// Sources: eight ports of one address, so that the same peer comes back.
const SOURCES: u16 = 8;
const EPOCH: Duration = Duration::from_millis(5);

/// One `Instant` for every run: time is `base + offset`, the offset from
/// the input.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn source(selector: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 47000 + u16::from(selector) % SOURCES))
}

/// The input, read a byte at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0 {
            [b, rest @ ..] => {
                self.0 = rest;
                *b
            }
            [] => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (take, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        take
    }
}

fuzz_target!(|data: &[u8]| {
    let params = Params {
        epoch_millis: EPOCH.as_millis() as u64,
        epoch_limit: 3,
        window_size: 4,
        max_unacked_messages: 4,
        ..Params::default()
    };
    let mut config = ServerConfig::new(params);
    config.max_connections = MAX_CONNECTIONS;
    config.id_seed = Some(0x5eed);
    let mut server = PolledServer::new(config);
    let start = base();
    let mut now = start;
    let mut next_epoch = start + EPOCH;
    let mut input = Input(data);
    while !input.0.is_empty() {
        match input.byte() % 8 {
            // A datagram: [source, length, bytes...].
            0..=3 => {
                let from = source(input.byte());
                let len = usize::from(input.byte());
                server.handle(now, from, input.bytes(len));
            }
            4 => server.end_batch(now),
            // Time passes: [steps of a quarter epoch]; every epoch boundary
            // crossed ticks, as the driver's epoch thread would.
            5 => {
                now += EPOCH / 4 * u32::from(input.byte() % 16);
                while next_epoch <= now {
                    server.handle_epoch(next_epoch);
                    next_epoch += EPOCH;
                }
            }
            // The application writes to a connection: [which, length].
            6 => {
                let ids = server.connections();
                let which = usize::from(input.byte());
                let len = usize::from(input.byte());
                if let Some(&id) = ids.get(which % ids.len().max(1)) {
                    let _ = server.write(now, id, &vec![b'w'; len]);
                }
            }
            // The application closes a connection, or the server: [which].
            _ => {
                let ids = server.connections();
                let which = usize::from(input.byte());
                match ids.get(which % (ids.len() + 1)) {
                    Some(&id) => {
                        let _ = server.close_conn(now, id);
                    }
                    None if which == 255 => server.close(now),
                    None => {}
                }
            }
        }
        // Everything sent goes to a peer that spoke first.
        while let Some((to, _)) = server.poll_transmit() {
            assert_eq!(to.ip(), Ipv4Addr::LOCALHOST);
            assert!((47000..47000 + SOURCES).contains(&to.port()), "{to}");
        }
        // The application reads everything, as a driver hands it over.
        while let Some(output) = server.poll_output() {
            if let ServerOutput::App(ServerEvent::Message { id, payload }) = output {
                server.read_done(now, id, 1, payload.len());
            }
        }
        assert!(server.connections().len() <= MAX_CONNECTIONS);
        assert!(server.totals().active <= MAX_CONNECTIONS);
    }
});
