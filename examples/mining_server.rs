//! The mining pool's server: accepts miners and clients on one LSP port,
//! cuts each client's request into chunks, hands them to the miners (see
//! `mining/scheduler.rs` for the policy) and answers with the least hash.
//!
//! ```text
//! cargo run --release --example mining_server -- 6060
//! cargo run --release --example mining_server -- 6060 --host 0.0.0.0 -v   # a pool across machines
//! ```
//!
//! The first line of output is `listening on ADDRESS` (PORT 0 picks a free
//! port). With `-v` every scheduling decision is logged.

// Shared with the other mining programs, the demo and the tests; each
// program uses only part of what it includes.
#[allow(dead_code)]
mod mining {
    pub mod cli;
    pub mod message;
    pub mod scheduler;
    pub mod server;
}

use std::io::Write as _;

use clap::Parser;
use liveseq::Server;

use mining::cli::ProtocolFlags;

#[derive(Parser, Debug)]
#[command(about = "Serve a pool of miners and the clients that use it")]
struct Args {
    /// UDP port to listen on (0 picks a free one).
    port: u16,
    /// Address to listen on. LSP has no authentication: anyone who can
    /// reach the port can join or submit work.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Most nonces in one chunk of work. Smaller chunks spread work and
    /// recover from lost miners at a finer grain; larger ones cost fewer
    /// round trips. 100,000 takes a few milliseconds on one core.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    chunk_size: u64,
    #[command(flatten)]
    protocol: ProtocolFlags,
}

fn main() {
    let args = Args::parse();
    args.protocol.init_logging();
    let server = match Server::bind((args.host.as_str(), args.port), args.protocol.params()) {
        Ok(server) => server,
        Err(err) => {
            eprintln!(
                "mining_server: cannot listen on {}:{}: {err}",
                args.host, args.port
            );
            std::process::exit(1);
        }
    };
    match server.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(err) => eprintln!("mining_server: {err}"),
    }
    // Scripts wait for that line; make sure it is out.
    let _ = std::io::stdout().flush();
    // Runs until the process is stopped; every decision is logged by serve.
    mining::server::serve(&server, args.chunk_size, |_| {});
}
