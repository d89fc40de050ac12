//! A thread-per-connection echo server on `Listener`, in the manner of
//! `TcpListener`: each thread reads and writes its own client only.
//!
//! ```text
//! cargo run --example listener_echo -- --port 9999
//! cargo run --example echo_client -- --port 9999      # in other terminals
//! ```
//!
//! The first line of output is `listening on ADDRESS`.

use std::io::Write;
use std::thread;

use clap::Parser;
use liveseq::{Error, Server};

mod common;

#[derive(Parser, Debug)]
#[command(about = "a thread-per-connection LSP echo server")]
struct Args {
    #[command(flatten)]
    address: common::AddressArgs,
    #[command(flatten)]
    protocol: common::ProtocolArgs,
}

fn main() {
    let args = Args::parse();
    args.protocol.init_logging();
    let listener = match Server::builder()
        .params(args.protocol.params())
        .faults(args.protocol.faults())
        .listen(args.address.addr())
    {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("listener_echo: {err}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(err) => eprintln!("listener_echo: {err}"),
    }
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(conn) => conn,
            Err(err) => {
                eprintln!("listener_echo: {err}");
                break;
            }
        };
        println!("connection {} from {}", conn.id(), conn.peer_addr());
        thread::spawn(move || loop {
            match conn.read() {
                // `write` waits only for room in this client's own buffer.
                Ok(msg) => {
                    if let Err(err) = conn.write(&msg) {
                        eprintln!("connection {}: {err}", conn.id());
                        return;
                    }
                }
                Err(Error::ConnectionLost(id)) => return println!("connection {id} lost"),
                Err(_) => return,
            }
        });
    }
}
