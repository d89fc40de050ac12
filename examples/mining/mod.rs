//! The course's distributed bitcoin miner, built on liveseq: the parts the
//! three programs (`mining_server`, `mining_miner`, `mining_client`), the
//! demo and the tests share.
//!
//! A client asks the server for the nonce in `[0, max]` whose hash of
//! `"{data} {nonce}"` is least; the server cuts the range into chunks, hands
//! them to the miners that have joined, and answers with the least of the
//! chunks' answers. Each side is one LSP connection carrying one JSON
//! message per LSP message.
//!
//! `message`, `hash` and `scheduler` are pure (no I/O) and unit-tested on
//! their own; `server`, `miner` and `client` put them on the network.

pub mod cli;
pub mod client;
pub mod hash;
pub mod message;
pub mod miner;
pub mod scheduler;
pub mod server;
