//! `lsp-inspect`: a proxy between an LSP client and server that records
//! every datagram, checks each side against the wire protocol, injects
//! seeded faults and draws a timeline. `lsp-inspect --help` tells how.
//!
//! The parts: [`cli`] parses the command line, [`proxy`] moves datagrams,
//! [`check`] judges them, [`faults`] decides their fate, [`record`] logs
//! and sums them up, [`timeline`] draws them. Only `proxy` does I/O.

#![deny(unsafe_code)]

mod check;
mod cli;
mod faults;
mod proxy;
mod record;
mod timeline;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by the SIGINT handler; the main thread polls it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_sigint() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe, and lives for the whole program.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, duration) = match cli::parse(&args) {
        Ok(cli::Command::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(cli::Command::Run(config, duration)) => (config, duration),
        Err(e) => {
            eprintln!("lsp-inspect: error: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    catch_sigint();
    let proxy = match proxy::Proxy::start(*config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lsp-inspect: error: {e}");
            return ExitCode::from(2);
        }
    };
    println!("listening on {}", proxy.local_addr());
    let _ = std::io::stdout().flush();
    let deadline = duration.and_then(|d| Instant::now().checked_add(d));
    while !INTERRUPTED.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        let left = deadline.map_or(Duration::from_millis(50), |d| {
            d.saturating_duration_since(Instant::now())
        });
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    let outcome = proxy.stop();
    println!("{}", outcome.summary);
    let _ = std::io::stdout().flush();
    for e in &outcome.errors {
        eprintln!("lsp-inspect: error: {e}");
    }
    if outcome.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
