//! Opt-in interoperability with the Go reference runners (`srunner_sols`,
//! the echo server, and `crunner_sols`, the echo client, from
//! bin/linux/amd64 of the public repository zoharrpg/Distributed-Bitcoin-Miner).
//! Ignored by default; run with `--ignored` and `LIVESEQ_GO_RUNNERS` naming
//! the folder holding both (unset, an ignored test run fails, it does not pass).
//!
//! The mixed pairs run in both directions: a liveseq `Server` in this process
//! with `crunner_sols` as a subprocess, and `srunner_sols` as a subprocess
//! with a liveseq `Client` in this process. Each row of the matrix (loss 0,
//! 20 or 40% dropped on read and on write at both ends, window 1, 4 or 16
//! with max unacked equal to it) is run several times; each run echoes N
//! messages and checks every echo byte for byte and in order. A table of
//! pass counts is printed, and the test fails if any run failed.
//!
//! ```text
//! LIVESEQ_GO_RUNNERS=/path/to/bin/linux/amd64 \
//!     cargo test --release --test interop -- --ignored --skip measure_connect_rates --nocapture --test-threads=1
//! ```
//!
//! Knobs (environment): `LIVESEQ_INTEROP_RUNS` (runs per row, run in parallel, default 3),
//! `LIVESEQ_INTEROP_LINES` (messages per run, default 50),
//! `LIVESEQ_INTEROP_RECEIVE_THREADS` (the liveseq server's, default 2, so
//! that Go clients meet a server whose receive threads may take one
//! client's datagrams out of order),
//! `LIVESEQ_INTEROP_EPOCH_MS` (default 100), `LIVESEQ_INTEROP_EPOCH_LIMIT`
//! (default 20: with 40% dropped at both ends only 36% of datagrams get
//! through, and the runs are about delivery, not loss detection),
//! `LIVESEQ_INTEROP_LOSSES` and `LIVESEQ_INTEROP_WINDOWS` (comma-separated
//! lists, defaults `0,20,40` and `1,4,16`).
//!
//! `measure_connect_rates` only connects: `LIVESEQ_INTEROP_CONNECT_RUNS`
//! attempts per direction (required: the test fails without it) at
//! `LIVESEQ_INTEROP_CONNECT_LOSS` percent (default 40) dropped on read and
//! write at both ends, with epoch limit `LIVESEQ_INTEROP_CONNECT_EPOCH_LIMIT`
//! (default 5, the Go default). It prints the success rates and asserts nothing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use liveseq::{Client, ConnId, Error, Faults, Params, Server};

/// Why the Go tests are ignored, and what they need when run with `--ignored`.
const NEEDS_RUNNERS: &str = "set LIVESEQ_GO_RUNNERS to the folder with srunner_sols and \
crunner_sols (bin/linux/amd64 of the public repository zoharrpg/Distributed-Bitcoin-Miner; \
see tests/README.md)";

/// The folder with both runners. Panics when `LIVESEQ_GO_RUNNERS` is unset:
/// the tests that call it are ignored by default, and one run with
/// `--ignored` but without the runners must fail, not pass having run nothing.
fn runners() -> PathBuf {
    let Some(dir) = std::env::var_os("LIVESEQ_GO_RUNNERS") else {
        panic!("{NEEDS_RUNNERS}");
    };
    let dir = PathBuf::from(dir);
    for name in ["srunner_sols", "crunner_sols"] {
        assert!(
            dir.join(name).is_file(),
            "LIVESEQ_GO_RUNNERS={} has no {name}",
            dir.display()
        );
    }
    dir
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn env_list(name: &str, default: &[u32]) -> Vec<u32> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a list of numbers"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// One row of the matrix.
#[derive(Clone, Copy, Debug)]
struct Row {
    /// Percent dropped on read and on write, at both ends.
    loss: u32,
    window: u32,
    epoch_millis: u64,
    epoch_limit: u32,
    lines: usize,
}

impl Row {
    fn params(&self) -> Params {
        Params {
            epoch_limit: self.epoch_limit,
            epoch_millis: self.epoch_millis,
            window_size: self.window,
            max_unacked_messages: self.window,
            max_backoff_interval: 0,
        }
    }

    fn faults(&self, seed: u64) -> Faults {
        Faults {
            read_drop_percent: self.loss as u8,
            write_drop_percent: self.loss as u8,
            seed: Some(seed),
            ..Faults::default()
        }
    }

    /// The runner's flags for the same parameters and loss.
    fn runner_args(&self) -> Vec<String> {
        [
            ("-elim", self.epoch_limit.to_string()),
            ("-ems", self.epoch_millis.to_string()),
            ("-wsize", self.window.to_string()),
            ("-maxUnackMessages", self.window.to_string()),
            ("-maxbackoff", "0".to_string()),
            ("-rdrop", self.loss.to_string()),
            ("-wdrop", self.loss.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }

    /// A bound on one run: generous, only a hang should reach it.
    fn deadline(&self) -> Instant {
        let epochs = 4 * self.epoch_limit as u64 + 20 * self.lines as u64;
        Instant::now() + Duration::from_millis(self.epoch_millis * epochs) + Duration::from_secs(5)
    }
}

/// How a run ended.
enum Outcome {
    Pass,
    ConnectFailed(String),
    Failed(String),
}

/// A runner subprocess, killed and reaped when dropped, whatever happened.
/// Its standard output and error arrive line by line on `lines`.
struct Runner {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Runner {
    fn spawn(program: &Path, args: &[String], stdin: Option<Vec<u8>>) -> Runner {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let (tx, lines) = mpsc::channel();
        fn forward(from: impl Read + Send + 'static, tx: mpsc::Sender<String>, tag: &'static str) {
            thread::spawn(move || {
                for line in BufReader::new(from).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(format!("{tag}{line}")).is_err() {
                        return;
                    }
                }
            });
        }
        forward(child.stdout.take().unwrap(), tx.clone(), "");
        forward(child.stderr.take().unwrap(), tx, "stderr: ");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Written from a thread (the runner may not read it all before it
            // fails) and closed at the end: the runner sees end of input.
            thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        Runner { child, lines }
    }

    /// The next line, or `None` at the deadline or once the runner has exited
    /// and everything it printed has been read.
    fn next_line(&self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).ok()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the runner binds it; we retry if it
/// was taken in between).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `srunner_sols` on a free port; returns it once it is listening.
fn start_srunner(dir: &Path, row: &Row) -> (Runner, u16) {
    for _ in 0..10 {
        let port = free_port();
        let mut args = vec!["-port".to_string(), port.to_string()];
        args.extend(row.runner_args());
        let runner = Runner::spawn(&dir.join("srunner_sols"), &args, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(line) = runner.next_line(deadline) {
            if line.contains("waiting for clients") {
                return (runner, port);
            }
            if line.contains("Failed") {
                break;
            }
        }
    }
    panic!("srunner_sols did not start on any of ten free ports");
}

/// The text message `i` of run `run` for `crunner_sols`, which reads
/// whitespace-separated words: 1 to 300 printable non-space ASCII bytes.
fn word(run: u64, i: usize) -> Vec<u8> {
    let len = 1 + (i * 131 + run as usize * 17) % 300;
    let mut w: Vec<u8> = format!("{i}:").into_bytes();
    w.extend((0..len).map(|j| b'!' + ((j * 7 + i * 13 + run as usize) % 94) as u8));
    w
}

/// crunner prints `Client: ` as a prompt without a newline, then
/// `Server: <echo>` on the same line.
fn strip_prompts(mut line: &str) -> &str {
    while let Some(rest) = line.strip_prefix("Client: ") {
        line = rest;
    }
    line
}

/// What the echo server read, with the connection it came on, in order.
type Received = Arc<Mutex<Vec<(ConnId, Vec<u8>)>>>;

/// A liveseq server with an echo loop that records what it received.
struct EchoServer {
    server: Arc<Server>,
    received: Received,
    echo: Option<thread::JoinHandle<()>>,
}

impl EchoServer {
    fn start(row: &Row, seed: u64) -> EchoServer {
        let server = Arc::new(
            Server::builder()
                .params(row.params())
                .faults(row.faults(seed))
                .receive_threads(env_u64("LIVESEQ_INTEROP_RECEIVE_THREADS", 2) as usize)
                .bind("127.0.0.1:0")
                .unwrap(),
        );
        let received: Received = Arc::default();
        let echo = {
            let (server, received) = (server.clone(), received.clone());
            thread::spawn(move || loop {
                match server.read() {
                    Ok((id, msg)) => {
                        // Recorded before the echo goes out, so it is there
                        // when the client has seen the echo.
                        received.lock().unwrap().push((id, msg.clone()));
                        let _ = server.write(id, &msg);
                    }
                    Err(Error::ConnectionLost(_) | Error::ConnectionClosed(_)) => {}
                    Err(_) => return,
                }
            })
        };
        EchoServer {
            server,
            received,
            echo: Some(echo),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.server.close_timeout(Duration::from_millis(100));
        if let Some(t) = self.echo.take() {
            let _ = t.join();
        }
    }
}

/// liveseq server in this process, `crunner_sols` (isn 0) as a subprocess.
fn run_go_client(dir: &Path, row: &Row, seed: u64) -> Outcome {
    let server = EchoServer::start(row, seed);
    let port = server.server.local_addr().unwrap().port();
    let words: Vec<Vec<u8>> = (0..row.lines).map(|i| word(seed, i)).collect();
    let mut input = Vec::new();
    for w in &words {
        input.extend_from_slice(w);
        input.push(b'\n');
    }
    let mut args = vec![
        "-host".to_string(),
        "127.0.0.1".to_string(),
        "-port".to_string(),
        port.to_string(),
    ];
    args.extend(row.runner_args());
    let crunner = Runner::spawn(&dir.join("crunner_sols"), &args, Some(input));
    let deadline = row.deadline();
    let mut echoes = 0;
    let mut connected = false;
    while echoes < words.len() {
        let Some(line) = crunner.next_line(deadline) else {
            let why = if Instant::now() >= deadline {
                "timed out"
            } else {
                "crunner exited"
            };
            let msg = format!("{why} after {echoes} of {} echoes", words.len());
            return if connected {
                Outcome::Failed(msg)
            } else {
                Outcome::ConnectFailed(msg)
            };
        };
        if line.contains("Failed to connect") {
            return Outcome::ConnectFailed(line);
        }
        connected |= line.starts_with("Client: ");
        let line = strip_prompts(&line);
        if let Some(echo) = line.strip_prefix("Server: ") {
            if echo.as_bytes() != words[echoes] {
                return Outcome::Failed(format!(
                    "echo {echoes}: got {echo:?}, wrote {:?}",
                    String::from_utf8_lossy(&words[echoes])
                ));
            }
            echoes += 1;
        } else if !line.is_empty() && !line.starts_with("Connecting") {
            return Outcome::Failed(format!("after {echoes} echoes crunner said {line:?}"));
        }
    }
    // Every echo came back; the server must have read each word exactly once, in order.
    let received = server.received.lock().unwrap().clone();
    let ids: Vec<ConnId> = received.iter().map(|(id, _)| *id).collect();
    if ids.windows(2).any(|w| w[0] != w[1]) {
        return Outcome::Failed(format!("words arrived on several connections: {ids:?}"));
    }
    let got: Vec<Vec<u8>> = received.into_iter().map(|(_, m)| m).collect();
    if got != words {
        return Outcome::Failed(format!(
            "server read {} words, not the {} written in order",
            got.len(),
            words.len()
        ));
    }
    Outcome::Pass
}

/// Connects a liveseq client in another thread: a connect that neither
/// succeeds nor fails by `deadline` counts as failed.
fn connect_client(row: &Row, seed: u64, port: u16, deadline: Instant) -> Result<Client, String> {
    let (tx, rx) = mpsc::channel();
    let (params, faults) = (row.params(), row.faults(seed));
    thread::spawn(move || {
        let _ = tx.send(
            Client::builder()
                .params(params)
                .faults(faults)
                .connect(("127.0.0.1", port)),
        );
    });
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect neither succeeded nor failed in time".to_string()),
    }
}

/// `srunner_sols` as a subprocess, liveseq client (random isn) in this process.
fn run_go_server(dir: &Path, row: &Row, seed: u64) -> Outcome {
    let (_srunner, port) = start_srunner(dir, row);
    let deadline = row.deadline();
    let connect_by =
        Instant::now() + row.params().epoch() * (3 * row.epoch_limit) + Duration::from_secs(2);
    let client = match connect_client(row, seed, port, connect_by.min(deadline)) {
        Ok(c) => c,
        Err(e) => return Outcome::ConnectFailed(e),
    };
    let msgs: Vec<Vec<u8>> = (0..row.lines)
        .map(|i| common::payload(seed as usize, i, 300))
        .collect();
    for m in &msgs {
        if let Err(e) = client.write(m) {
            return Outcome::Failed(format!("write: {e}"));
        }
    }
    for (i, m) in msgs.iter().enumerate() {
        match client.read_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(echo) if echo == *m => {}
            Ok(echo) => {
                return Outcome::Failed(format!(
                    "echo {i}: got {} bytes {echo:?}, wrote {} bytes {m:?}",
                    echo.len(),
                    m.len()
                ))
            }
            Err(e) => return Outcome::Failed(format!("after {i} of {} echoes: {e}", msgs.len())),
        }
    }
    let _ = client.close_timeout(Duration::from_secs(2));
    Outcome::Pass
}

/// Pass and failure counts of one row.
#[derive(Default)]
struct Tally {
    pass: u32,
    connect_failed: u32,
    failed: u32,
    secs: f64,
}

/// Runs the matrix for one direction, prints its table, fails on any failure.
fn matrix(name: &str, run: fn(&Path, &Row, u64) -> Outcome) {
    let dir = runners();
    let runs = env_u64("LIVESEQ_INTEROP_RUNS", 3);
    let base = Row {
        loss: 0,
        window: 1,
        epoch_millis: env_u64("LIVESEQ_INTEROP_EPOCH_MS", 100),
        epoch_limit: env_u64("LIVESEQ_INTEROP_EPOCH_LIMIT", 20) as u32,
        lines: env_u64("LIVESEQ_INTEROP_LINES", 50) as usize,
    };
    let mut table = Vec::new();
    for loss in env_list("LIVESEQ_INTEROP_LOSSES", &[0, 20, 40]) {
        for window in env_list("LIVESEQ_INTEROP_WINDOWS", &[1, 4, 16]) {
            let row = Row {
                loss,
                window,
                ..base
            };
            let mut tally = Tally::default();
            let start = Instant::now();
            // The runs of a row go in parallel: they mostly wait for epochs.
            let outcomes: Vec<Outcome> = thread::scope(|s| {
                let handles: Vec<_> = (0..runs)
                    .map(|r| {
                        let (dir, row) = (&dir, &row);
                        let seed = u64::from(loss) * 1_000_000 + u64::from(window) * 1000 + r;
                        s.spawn(move || run(dir, row, seed))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (r, outcome) in outcomes.iter().enumerate() {
                let at = format!("{name}: loss {loss}% window {window} run {r}");
                match outcome {
                    Outcome::Pass => tally.pass += 1,
                    Outcome::ConnectFailed(why) => {
                        tally.connect_failed += 1;
                        println!("{at}: connect failed: {why}");
                    }
                    Outcome::Failed(why) => {
                        tally.failed += 1;
                        println!("{at}: failed: {why}");
                    }
                }
            }
            tally.secs = start.elapsed().as_secs_f64();
            table.push((row, tally));
        }
    }
    println!();
    println!(
        "{name}: {runs} runs per row (in parallel), {} messages each, epoch {} ms, epoch limit {}; \
         loss dropped on read and on write at both ends",
        base.lines, base.epoch_millis, base.epoch_limit
    );
    println!("| loss per end | window = max unacked | passed | connect failed | other failures | s for the row |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (row, t) in &table {
        println!(
            "| {}% | {} | {}/{runs} | {} | {} | {:.2} |",
            row.loss, row.window, t.pass, t.connect_failed, t.failed, t.secs
        );
    }
    let failed: u32 = table.iter().map(|(_, t)| t.connect_failed + t.failed).sum();
    assert_eq!(failed, 0, "{name}: {failed} runs failed (table above)");
}

#[test]
#[ignore = "needs the Go runners: set LIVESEQ_GO_RUNNERS (see tests/README.md)"]
fn liveseq_server_with_go_client() {
    matrix("liveseq server + crunner_sols", run_go_client);
}

#[test]
#[ignore = "needs the Go runners: set LIVESEQ_GO_RUNNERS (see tests/README.md)"]
fn go_server_with_liveseq_client() {
    matrix("srunner_sols + liveseq client", run_go_server);
}

/// Whether `crunner_sols` (isn 0) connects to a liveseq server: with no input
/// it connects, prompts once and exits, or prints that it failed.
fn go_client_connects(dir: &Path, row: &Row, seed: u64) -> bool {
    let server = EchoServer::start(row, seed);
    let port = server.server.local_addr().unwrap().port();
    let mut args = vec![
        "-host".to_string(),
        "127.0.0.1".to_string(),
        "-port".to_string(),
        port.to_string(),
    ];
    args.extend(row.runner_args());
    let crunner = Runner::spawn(&dir.join("crunner_sols"), &args, Some(Vec::new()));
    let deadline = row.deadline();
    while let Some(line) = crunner.next_line(deadline) {
        if line.contains("Failed to connect") {
            return false;
        }
        if line.starts_with("Client: ") {
            return true;
        }
    }
    false
}

/// Whether a liveseq client (random isn) connects to `srunner_sols`.
fn liveseq_client_connects(dir: &Path, row: &Row, seed: u64) -> bool {
    let (_srunner, port) = start_srunner(dir, row);
    let by = Instant::now() + row.params().epoch() * (3 * row.epoch_limit) + Duration::from_secs(2);
    match connect_client(row, seed, port, by) {
        Ok(client) => {
            let _ = client.close_timeout(Duration::from_millis(100));
            true
        }
        Err(_) => false,
    }
}

#[test]
#[ignore = "a measurement: set LIVESEQ_GO_RUNNERS and LIVESEQ_INTEROP_CONNECT_RUNS (see tests/README.md)"]
fn measure_connect_rates() {
    let dir = runners();
    let Ok(runs) = std::env::var("LIVESEQ_INTEROP_CONNECT_RUNS") else {
        panic!("set LIVESEQ_INTEROP_CONNECT_RUNS to the number of connects to try");
    };
    let runs: u64 = runs
        .parse()
        .expect("LIVESEQ_INTEROP_CONNECT_RUNS: a number");
    let row = Row {
        loss: env_u64("LIVESEQ_INTEROP_CONNECT_LOSS", 40) as u32,
        window: 1,
        epoch_millis: env_u64("LIVESEQ_INTEROP_EPOCH_MS", 100),
        epoch_limit: env_u64("LIVESEQ_INTEROP_CONNECT_EPOCH_LIMIT", 5) as u32,
        lines: 0,
    };
    let mut results = Vec::new();
    for (name, connects) in [
        (
            "crunner_sols (isn 0) -> liveseq server",
            go_client_connects as fn(&Path, &Row, u64) -> bool,
        ),
        (
            "liveseq client (random isn) -> srunner_sols",
            liveseq_client_connects,
        ),
    ] {
        let ok = (0..runs)
            .filter(|&r| connects(&dir, &row, 7_000 + r))
            .count();
        results.push((name, ok));
    }
    println!();
    println!(
        "connect only: {}% dropped on read and on write at both ends, epoch {} ms, epoch limit {}",
        row.loss, row.epoch_millis, row.epoch_limit
    );
    println!("| pair | connected |");
    println!("| --- | --- |");
    for (name, ok) in results {
        println!(
            "| {name} | {ok}/{runs} ({:.0}%) |",
            100.0 * ok as f64 / runs.max(1) as f64
        );
    }
}
