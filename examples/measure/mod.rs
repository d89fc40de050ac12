//! Helpers shared by the measuring examples (`bench`, `scale`, `attack`);
//! each uses what it needs.
#![allow(dead_code)]

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use liveseq::{Error, Server};

/// An echo loop on `server` in a thread: every message goes back to its
/// sender. It ends only with the server: a connection's end and a failed
/// write concern that client alone.
pub fn spawn_echo(server: Arc<Server>) -> JoinHandle<()> {
    thread::spawn(move || loop {
        match server.read() {
            Ok((id, msg)) => {
                let _ = server.write(id, &msg);
            }
            Err(Error::ConnectionLost(_) | Error::ConnectionClosed(_)) => {}
            Err(_) => return,
        }
    })
}

/// This process's resident memory now and at its peak (since the last
/// [`reset_peak_rss`]), in KiB, from /proc/self/status.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident memory to the current one (Linux 4.0 and later).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
