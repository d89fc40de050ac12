//! An LSP echo server, the counterpart of the reference `srunner`: every
//! message is written back to the client that sent it.
//!
//! ```text
//! cargo run --release --example echo_server -- --port 9999
//! cargo run --release --example echo_server -- --port 0 -v   # prints the port it got
//! ```
//!
//! The first line of output is `listening on ADDRESS`. With `-v` it also
//! logs at debug level and prints each connection's statistics when it ends.

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam_channel::RecvTimeoutError;
use liveseq::{Error, Server};

#[derive(Parser, Debug)]
#[command(about = "LSP echo server")]
struct Args {
    #[command(flatten)]
    address: common::AddressArgs,
    #[command(flatten)]
    protocol: common::ProtocolArgs,
}

fn main() {
    let args = Args::parse();
    args.protocol.init_logging();
    let server = match Server::builder()
        .params(args.protocol.params())
        .faults(args.protocol.faults())
        .bind(args.address.addr())
    {
        Ok(server) => Arc::new(server),
        Err(err) => {
            eprintln!("echo_server: cannot listen on {}: {err}", args.address);
            std::process::exit(1);
        }
    };
    match server.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(err) => eprintln!("echo_server: {err}"),
    }
    // Tests and scripts wait for that line; make sure it is out.
    let _ = std::io::stdout().flush();
    if args.protocol.verbose {
        let server = server.clone();
        std::thread::spawn(move || report(&server));
    }
    loop {
        match server.read() {
            Ok((id, msg)) => {
                if let Err(err) = server.write(id, &msg) {
                    eprintln!("echo_server: echo to connection {id} failed: {err}");
                }
            }
            Err(Error::ConnectionLost(id)) => eprintln!("echo_server: connection {id} lost"),
            Err(Error::ConnectionClosed(_)) => {}
            Err(err) => {
                eprintln!("echo_server: {err}");
                std::process::exit(1);
            }
        }
    }
}

/// With `-v`: every lifecycle event as it happens, and every five seconds
/// the totals and each live connection's statistics.
fn report(server: &Server) {
    let events = server.subscribe();
    let every = Duration::from_secs(5);
    let mut next = Instant::now() + every;
    loop {
        match events.recv_deadline(next) {
            Ok(event) => {
                let id = event
                    .conn_id
                    .map_or_else(|| "-".to_string(), |id| id.to_string());
                println!("event: connection {id} ({}) {:?}", event.peer, event.state);
            }
            Err(RecvTimeoutError::Timeout) => {
                next += every;
                println!("totals: {:?}", server.totals());
                for id in server.connections() {
                    if let Some(stats) = server.stats(id) {
                        println!("  connection {id}: {stats:?}");
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
