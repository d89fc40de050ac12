//! The mining pool's request client: asks the server for the nonce in
//! `0..=MAXNONCE` whose hash with DATA is least, prints the answer and exits.
//!
//! ```text
//! cargo run --release --example mining_client -- 127.0.0.1:6060 "hello world" 10000000
//! Result 170408603606 2977214
//! ```
//!
//! Prints `Result HASH NONCE`, or `Disconnected` if the connection to the
//! server is lost or cannot be made: exactly the lines the course's client
//! prints and its tests read. Either way the exit status is 0, as the
//! course's tests expect (they take any other status for a crash).

// Shared with the other mining programs, the demo and the tests; each
// program uses only part of what it includes.
#[allow(dead_code)]
mod mining {
    pub mod cli;
    pub mod client;
    pub mod message;
}

use clap::Parser;

use mining::cli::ProtocolFlags;
use mining::client::request;

#[derive(Parser, Debug)]
#[command(about = "Ask a mining server for the least hash of DATA over nonces 0..=MAXNONCE")]
struct Args {
    /// The server, as HOST:PORT.
    hostport: String,
    /// The message to hash with each nonce.
    data: String,
    /// The largest nonce to try.
    max_nonce: u64,
    #[command(flatten)]
    protocol: ProtocolFlags,
}

fn main() {
    let args = Args::parse();
    args.protocol.init_logging();
    let outcome = request(
        args.hostport.as_str(),
        args.protocol.params(),
        &args.data,
        args.max_nonce,
    );
    println!("{outcome}");
}
