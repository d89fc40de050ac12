//! An LSP echo client, the counterpart of the reference `crunner`: each line
//! of standard input is sent to the server as soon as it is read, and each
//! echo is printed as it arrives (by another thread: writing never waits for
//! echoes). At the end of input the client waits for the remaining echoes,
//! closes (draining) and exits.
//!
//! ```text
//! cargo run --release --example echo_server -- --port 9999 &
//! printf 'hello\nworld\n' | cargo run --release --example echo_client -- --port 9999
//! ```
//!
//! Exits with status 1 and a message on standard error if it cannot connect
//! or the connection is lost.

mod common;

use std::io::{BufRead, Write as _};
use std::sync::Arc;

use clap::Parser;
use liveseq::{Client, Error};

#[derive(Parser, Debug)]
#[command(about = "LSP echo client: sends stdin line by line, prints the echoes")]
struct Args {
    #[command(flatten)]
    address: common::AddressArgs,
    #[command(flatten)]
    protocol: common::ProtocolArgs,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("echo_client: {msg}");
    std::process::exit(1);
}

fn main() {
    let args = Args::parse();
    args.protocol.init_logging();
    let client = Client::builder()
        .params(args.protocol.params())
        .faults(args.protocol.faults())
        .connect(args.address.addr())
        .unwrap_or_else(|err| fail(format!("cannot connect to {}: {err}", args.address)));
    let client = Arc::new(client);

    // The printer blocks in `read` and reports each echo it printed; `close`
    // wakes it with `Error::Closed` once every echo is out.
    let (printed_tx, printed_rx) = crossbeam_channel::unbounded::<()>();
    let printer = {
        let client = client.clone();
        std::thread::spawn(move || loop {
            match client.read() {
                Ok(echo) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&echo);
                    let _ = out.write_all(b"\n");
                    let _ = out.flush();
                    let _ = printed_tx.send(());
                }
                Err(Error::Closed) => return,
                Err(err) => fail(err),
            }
        })
    };

    let mut sent = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|err| fail(format!("reading stdin: {err}")));
        if let Err(err) = client.write(line.as_bytes()) {
            fail(err);
        }
        sent += 1;
    }
    for _ in 0..sent {
        if printed_rx.recv().is_err() {
            fail("printer thread ended early");
        }
    }
    if let Err(err) = client.close() {
        fail(format!("close: {err}"));
    }
    if printer.join().is_err() {
        fail("printer thread panicked");
    }
}
