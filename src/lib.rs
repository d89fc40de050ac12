//! # liveseq: the Live Sequence Protocol
//!
//! LSP gives you reliable, ordered, exactly-once messages over UDP, with
//! message boundaries and loss detection. A [`Server`] talks to many
//! [`Client`]s over one socket; every API blocks like `std::net` does and
//! needs no async runtime. liveseq speaks the same bytes as the Go LSP
//! implementations used in distributed-systems teaching.
//!
//! ```
//! use liveseq::{Client, Params, Server};
//!
//! # fn main() -> Result<(), liveseq::Error> {
//! let params = Params { epoch_millis: 100, ..Params::default() };
//! let server = Server::bind("127.0.0.1:0", params)?;
//! let client = Client::connect(server.local_addr()?, params)?;
//!
//! client.write(b"hello")?;
//! let (id, msg) = server.read()?;
//! server.write(id, &msg)?;
//! assert_eq!(client.read()?, b"hello");
//!
//! client.close()?;
//! server.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! The protocol logic lives in [`proto`], state machines that do no I/O and
//! read no clock; the client and server are thin threaded drivers around them.

// Unsafe code is confined to `sys` (batched receive), where it is audited.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod driver;
mod error;
mod event;
mod lifecycle;
mod params;
pub mod proto;
mod server;
mod stats;

pub use client::{Client, ClientBuilder};
pub use driver::faults::Faults;
pub use error::Error;
pub use event::ServerEvent;
pub use lifecycle::{ConnEvent, ConnState, ReconnectPolicy};
pub use params::Params;
pub use server::{ConnId, Server, ServerBuilder};
pub use stats::{ConnStats, Rtt, ServerStats};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
