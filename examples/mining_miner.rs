//! A mining pool miner: joins the server at HOST:PORT and mines the chunks
//! it is given, one at a time, until the server is lost.
//!
//! ```text
//! cargo run --release --example mining_miner -- 127.0.0.1:6060
//! ```
//!
//! Exits with status 0 once the server is lost (the course's miner "shuts
//! itself down"), or 1 if it cannot join.

// Shared with the other mining programs, the demo and the tests; each
// program uses only part of what it includes.
#[allow(dead_code)]
mod mining {
    pub mod cli;
    pub mod hash;
    pub mod message;
    pub mod miner;
}

use clap::Parser;

use mining::cli::ProtocolFlags;
use mining::miner::{Exit, Miner, Report};

#[derive(Parser, Debug)]
#[command(about = "Join a mining server and mine until it is gone")]
struct Args {
    /// The server, as HOST:PORT.
    hostport: String,
    #[command(flatten)]
    protocol: ProtocolFlags,
}

fn main() {
    let args = Args::parse();
    args.protocol.init_logging();
    let miner = match Miner::join(args.hostport.as_str(), args.protocol.params()) {
        Ok(miner) => miner,
        Err(err) => {
            eprintln!("mining_miner: cannot join {}: {err}", args.hostport);
            std::process::exit(1);
        }
    };
    log::info!("joined {} as connection {}", args.hostport, miner.conn_id());
    let exit = miner.run(|report| {
        if let Report::Done {
            lower,
            upper,
            hash,
            nonce,
        } = report
        {
            log::debug!("chunk {lower}..={upper}: least hash {hash} at nonce {nonce}");
        }
    });
    match exit {
        Exit::ServerLost => eprintln!("mining_miner: lost the server; shutting down"),
        Exit::Killed => {} // only the demo and the tests kill miners
    }
}
