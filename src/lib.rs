//! # liveseq: the Live Sequence Protocol
//!
//! LSP gives you reliable, ordered, exactly-once messages over UDP, with
//! message boundaries and loss detection. A [`Server`] talks to many
//! [`Client`]s over one socket; every API blocks like `std::net` does and
//! needs no async runtime. liveseq speaks the same bytes as the Go LSP
//! implementations used in distributed-systems teaching.
//!
//! A server is one loop over [`Server::next_event`]: a client connected, a
//! message arrived, a connection ended. Every connection's events come in
//! order, `Connected` first and exactly one of `Closed` or `Lost` last, and
//! its only errors are [`Error::Closed`] after [`Server::close`] and
//! [`Error::Failed`] if the instance failed, so `?` is safe there.
//! [`Server::write`] never blocks, and its errors concern one connection:
//! handle them, never `?` them, and no client can stall or end the loop.
//!
//! ```
//! use liveseq::{Client, Params, Server, ServerEvent};
//!
//! # fn main() -> Result<(), liveseq::Error> {
//! // Short epochs for the example: a silent client is lost after 5 x 50 ms.
//! let params = Params { epoch_millis: 50, ..Params::default() };
//! let server = Server::bind("127.0.0.1:0", params)?;
//! let addr = server.local_addr()?;
//!
//! // A client on its own thread: connect, write, read the echo, close.
//! let client = std::thread::spawn(move || -> Result<(), liveseq::Error> {
//!     let client = Client::connect(addr, params)?;
//!     client.write(b"hello")?; // waits only if the client's send buffer is full
//!     assert_eq!(client.read()?, b"hello");
//!     client.close() // returns once everything written is acknowledged
//! });
//!
//! // An echo server.
//! loop {
//!     match server.next_event()? {
//!         ServerEvent::Connected { id, peer } => println!("connection {id} from {peer}"),
//!         ServerEvent::Message { id, payload } => {
//!             // Never blocks; an error concerns this client alone, so no `?`.
//!             if let Err(err) = server.write(id, &payload) {
//!                 eprintln!("connection {id}: {err}");
//!             }
//!         }
//!         ServerEvent::Closed { id } | ServerEvent::Lost { id } => {
//!             println!("connection {id} ended");
//!             break; // this example serves one client
//!         }
//!         _ => {} // ServerEvent may grow
//!     }
//! }
//! client.join().unwrap()?;
//! server.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! LSP has no close message: a client that calls [`Client::close`] simply
//! goes quiet, and the server reports it [`Lost`](ServerEvent::Lost) after
//! `epoch_limit` silent epochs (10 seconds with the default [`Params`]).
//!
//! [`Server::read`] mirrors the Go API's `Read`: it returns the next message
//! as `Ok((id, payload))` and a connection's end as an error,
//! `Err(`[`ConnectionLost`](Error::ConnectionLost)`(id))` or
//! `Err(`[`ConnectionClosed`](Error::ConnectionClosed)`(id))`. Those errors
//! are routine, so match on them rather than passing them up with `?`, which
//! would stop the server the first time a client leaves. [`Client::read`] is
//! the same for one connection.
//!
//! All methods take `&self`, and `Client` and `Server` are `Send + Sync`:
//! share one in an [`Arc`](std::sync::Arc), block in `read` or `next_event`
//! on one thread and write from others. [`Server::write`] never blocks;
//! [`Client::write`] waits only for room in the client's own send buffer.
//!
//! # Events and channels
//!
//! [`Server::subscribe`] and [`Client::subscribe`] return a
//! [`crossbeam_channel::Receiver`] of [`ConnEvent`]s (lifecycle changes, see
//! [`ConnState`]), and [`ClientBuilder::events`] takes a
//! [`crossbeam_channel::Sender`]. The crate is re-exported as
//! `liveseq::crossbeam_channel`, so you do not need to depend on it yourself;
//! if you do, use a version compatible with liveseq's (0.5), or the types
//! will not match. Its `select!` macro waits on several channels at once.
//!
//! ```
//! use liveseq::crossbeam_channel::{select, unbounded, Receiver};
//! use liveseq::{Client, ConnEvent, ConnState, Params, Server};
//!
//! fn states(events: &Receiver<ConnEvent>) -> Vec<ConnState> {
//!     events.try_iter().map(|event| event.state).collect()
//! }
//!
//! # fn main() -> Result<(), liveseq::Error> {
//! let params = Params { epoch_millis: 50, ..Params::default() };
//! let server = Server::bind("127.0.0.1:0", params)?;
//! let server_events = server.subscribe();
//!
//! let (tx, client_events) = unbounded();
//! let client = Client::builder().params(params).events(tx).connect(server.local_addr()?)?;
//! assert_eq!(states(&client_events), [ConnState::Connecting, ConnState::Connected]);
//!
//! select! {
//!     recv(server_events) -> event => assert_eq!(event.unwrap().conn_id, Some(client.conn_id())),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Where to look next
//!
//! * [`Listener`]: the same server with a thread per connection, as with
//!   `TcpListener`: [`Listener::accept`] hands out a [`Connection`] per client.
//! * `examples/chat.rs` in the repository: a broadcast chat server on
//!   `next_event`, handling joins, leaves and connections that end mid-broadcast.
//! * [`ServerBuilder::memory_budget`], [`Server::is_writable`]: how a server
//!   keeps one peer from hurting the others (see also the README's security model).
//! * [`Params`]: epochs, windows and back-off, with the reference defaults
//!   and presets for real networks ([`Params::lan`], [`Params::wan`]);
//!   [`ServerBuilder`] and [`ClientBuilder`] for datagram size, connection
//!   limits, reconnection and failing fast on a refused connect.
//! * [`Error`]: what each call can return.
//! * [`ConnState`], [`Server::stats`], [`Server::totals`]: watching connections.
//! * [`proto`]: the protocol logic, state machines that do no I/O and read no
//!   clock; the client and server are thin threaded drivers around them.
//! * `docs/PROTOCOL.md` in the repository: the protocol as liveseq speaks it,
//!   wire format, rules and the project's own decisions, precisely enough to
//!   write a second implementation.

// Unsafe code is confined to `driver::sys` (batched receive with each
// datagram's destination, sending from a chosen source, socket options),
// where it is audited; the lsp-inspect binary has two more, its SIGINT
// handler and one `poll` call.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod driver;
mod error;
mod lifecycle;
mod listener;
mod messages;
mod options;
mod params;
pub mod proto;
mod server;

pub use client::{Client, ClientBuilder};
#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub use driver::faults::Faults;
pub use error::Error;
pub use lifecycle::{ConnEvent, ReconnectPolicy};
pub use listener::{Connection, Incoming, Listener};
pub use messages::Messages;
pub use params::Params;
pub use proto::ConnId;
pub use proto::ConnState;
pub use proto::ServerEvent;
pub use proto::{ConnStats, Rtt, ServerStats};
pub use server::{Server, ServerBuilder, MAX_DEFAULT_RECEIVE_THREADS};

/// The channels of [`Server::subscribe`], [`Client::subscribe`] and
/// [`ClientBuilder::events`], re-exported so `liveseq` alone suffices.
pub use crossbeam_channel;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The README's figures, checked against the code so they cannot go stale.
#[cfg(test)]
mod readme_figures {
    const README: &str = include_str!("../README.md");

    /// The README section that starts with `heading`, up to the next one.
    fn section(heading: &str) -> &'static str {
        let start = README
            .find(heading)
            .unwrap_or_else(|| panic!("README has no {heading:?}"));
        let rest = &README[start + heading.len()..];
        &rest[..rest.find("\n## ").unwrap_or(rest.len())]
    }

    #[test]
    fn message_size_table_matches_max_payload() {
        let rows: Vec<(usize, usize)> = section("## Limits and timing")
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                Some((cells.get(1)?.parse().ok()?, cells.get(2)?.parse().ok()?))
            })
            .collect();
        let sizes: Vec<usize> = rows.iter().map(|&(size, _)| size).collect();
        assert_eq!(
            sizes,
            [
                crate::proto::DEFAULT_MAX_DATAGRAM,
                1500,
                9000,
                crate::proto::MAX_DATAGRAM
            ]
        );
        for (size, payload) in rows {
            assert_eq!(crate::proto::max_payload(size), payload, "row {size}");
        }
    }

    #[test]
    fn datagram_size_bounds_are_as_documented() {
        assert!(section("## Limits and timing").contains("(368 to 65507)"));
        let bind = |size| {
            crate::Server::builder()
                .max_datagram_size(size)
                .bind("127.0.0.1:0")
        };
        for size in [367, 65508] {
            assert!(matches!(
                bind(size),
                Err(crate::Error::InvalidParams {
                    field: "max_datagram_size",
                    ..
                })
            ));
        }
        for size in [368, 65507] {
            bind(size).unwrap().close().unwrap();
        }
    }

    #[test]
    fn preset_table_matches_the_presets() {
        use std::time::Duration;
        fn secs(d: Duration) -> String {
            format!("{}", d.as_secs_f64())
        }
        fn one(d: Duration) -> String {
            if d < Duration::from_secs(1) {
                format!("{} ms", d.as_millis())
            } else {
                format!("{} s", secs(d))
            }
        }
        let presets = [
            crate::Params::default(),
            crate::Params::lan(),
            crate::Params::wan(),
        ];
        let row = |event: &str, cell: &dyn Fn(&crate::Params) -> String| {
            let cells: Vec<String> = presets.iter().map(cell).collect();
            format!("| {event} | {} |", cells.join(" | "))
        };
        let text = section("## Limits and timing");
        for expected in [
            row("connection lost, after the peer's last datagram", &|p| {
                let last = p.epoch() * p.epoch_limit;
                format!("{}-{} s", secs(last - p.epoch()), secs(last))
            }),
            row(
                "connect gives up (no answer, or refused by default)",
                &|p| one(p.epoch() * p.epoch_limit),
            ),
            row(
                "first retransmission of a lost message (at the next tick)",
                &|p| format!("0-{}", one(p.epoch())),
            ),
        ] {
            assert!(text.contains(&expected), "README lacks {expected:?}");
        }
    }

    #[test]
    fn default_timing_is_as_documented() {
        let text = section("## Limits and timing");
        let p = crate::Params::default();
        assert!(text.contains("(`epoch_limit` 5, `epoch_millis` 2000)"));
        assert_eq!((p.epoch_limit, p.epoch_millis), (5, 2000));
        assert!(text.contains("`epoch_limit` x `epoch_millis` = 10 s"));
        assert_eq!(
            p.epoch() * p.epoch_limit,
            std::time::Duration::from_secs(10)
        );
        assert!(text.contains("`Params { epoch_millis: 200, ..Params::default() }`"));
        assert!(text.contains("for a 1 s loss time"));
        let short = crate::Params {
            epoch_millis: 200,
            ..p
        };
        assert_eq!(
            short.epoch() * short.epoch_limit,
            std::time::Duration::from_secs(1)
        );
    }
}
