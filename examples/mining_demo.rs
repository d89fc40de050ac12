//! The mining pool in one process: a server, four miners and three clients
//! over loopback, one miner killed halfway.
//!
//! ```text
//! cargo run --release --example mining_demo
//! ```
//!
//! A large request goes in first, a medium and a small one just after; the
//! scheduler serves the later, smaller ones first (earliest deadline first,
//! see `mining/scheduler.rs`). When half of all the work is done one miner is
//! killed in the middle of a chunk; the server notices its silence after
//! `epoch_limit` epochs and hands the chunk to another miner. A live line
//! shows the progress and the chunks each miner did. At the end every answer
//! is checked against a direct computation; the demo exits non-zero on any
//! mismatch.

// Shared with the mining programs and the tests; the demo uses most of it.
#[allow(dead_code)]
mod mining {
    pub mod client;
    pub mod hash;
    pub mod message;
    pub mod miner;
    pub mod scheduler;
    pub mod server;
}

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, tick, unbounded, Receiver, RecvError};
use liveseq::{ConnId, Params, Server};

use mining::client::{request, Outcome};
use mining::hash::min_hash;
use mining::miner::{Killer, Miner};
use mining::scheduler::Note;

const MINERS: usize = 4;
/// The miner killed halfway (counting from 1, as printed).
const VICTIM: usize = 2;
/// About 15 ms of hashing on one core of a recent machine.
const CHUNK: u64 = 250_000;
/// Name, data and largest nonce of each client's request, in the order sent.
const REQUESTS: [(&str, &str, u64); 3] = [
    ("large", "a large request, sent first", 19_999_999),
    ("medium", "a medium request, sent next", 4_999_999),
    ("small", "a small request, sent last", 1_999_999),
];

type Answers = Vec<(Outcome, Duration)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    // Short epochs so that the killed miner is noticed within half a second.
    let params = Params {
        epoch_millis: 100,
        epoch_limit: 5,
        ..Params::default()
    };
    let server = Arc::new(Server::bind("127.0.0.1:0", params)?);
    let addr = server.local_addr()?;
    let notes = serve_in_background(server.clone());
    let mut miners = Vec::new();
    for _ in 0..MINERS {
        let miner = Miner::join(addr, params)?;
        miners.push((miner.conn_id(), miner.killer()));
        thread::spawn(move || miner.run(|_| {}));
    }
    let total = REQUESTS.iter().map(|(_, _, max)| max + 1).sum();
    let mut pool = Progress::new(miners.iter().map(|(id, _)| *id).collect(), total);
    pool.show.event(&format!(
        "pool on {addr}: {MINERS} miners, chunks of {} nonces, a peer silent for {} ms is lost",
        thousands(CHUNK),
        params.epoch_millis * u64::from(params.epoch_limit)
    ));
    let answers = send_requests(addr, params, &notes, &mut pool);
    let results = watch(&notes, &answers, &miners[VICTIM - 1].1, &mut pool)?;
    server.close_timeout(Duration::from_secs(1)).ok();
    check(&results, &pool)
}

/// Runs the server's loop on its own thread; its decisions come out of the
/// returned channel.
fn serve_in_background(server: Arc<Server>) -> Receiver<Note> {
    let (tx, notes) = unbounded();
    thread::spawn(move || {
        mining::server::serve(&server, CHUNK, |note| {
            let _ = tx.send(note.clone());
        })
    });
    notes
}

/// Starts the clients one after the other; each one's answer comes out of
/// the returned channel with its index in `REQUESTS`.
fn send_requests(
    addr: SocketAddr,
    params: Params,
    notes: &Receiver<Note>,
    pool: &mut Progress,
) -> Receiver<(usize, Outcome, Duration)> {
    let (tx, answers) = unbounded();
    for (i, (name, data, max)) in REQUESTS.into_iter().enumerate() {
        let tx = tx.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let outcome = request(addr, params, data, max);
            let _ = tx.send((i, outcome, started.elapsed()));
        });
        let line = format!("client {name:>6} asks for nonces 0..={}", thousands(max));
        pool.show.event(&line);
        // Let each request reach the server before the next, so that the
        // order they arrive in is the order shown.
        while let Ok(note) = notes.recv() {
            pool.on_note(&note);
            if matches!(note, Note::Accepted { .. }) {
                break;
            }
        }
    }
    answers
}

/// Follows the pool until every client has its answer, killing the victim
/// once half the work is done.
fn watch(
    notes: &Receiver<Note>,
    answers: &Receiver<(usize, Outcome, Duration)>,
    victim: &Killer,
    pool: &mut Progress,
) -> Result<Answers, RecvError> {
    let mut results: Vec<Option<(Outcome, Duration)>> = vec![None; REQUESTS.len()];
    let ticks = tick(Duration::from_millis(100));
    while results.iter().any(Option::is_none) {
        select! {
            recv(notes) -> note => {
                pool.on_note(&note?);
                if pool.killed.is_none() && pool.done * 2 >= pool.total {
                    victim.kill();
                    pool.killed = Some(VICTIM);
                    pool.show.event(&format!("half done: killing miner {VICTIM} in the middle of its chunk"));
                }
            }
            recv(answers) -> answer => {
                let (i, outcome, took) = answer?;
                pool.show.event(&format!("client {:>6} got {outcome} after {took:.2?}", REQUESTS[i].0));
                results[i] = Some((outcome, took));
            }
            recv(ticks) -> _ => pool.progress(),
        }
    }
    pool.progress();
    pool.show.finish();
    Ok(results.into_iter().flatten().collect())
}

/// Compares every answer with a direct computation (one thread per request).
fn check(results: &Answers, pool: &Progress) -> Result<(), Box<dyn std::error::Error>> {
    println!("\nchecking every answer against a direct computation ...");
    let direct: Vec<_> = REQUESTS
        .iter()
        .map(|&(_, data, max)| {
            thread::spawn(move || min_hash(data, 0, max, &AtomicBool::new(false)))
        })
        .collect();
    let mut all_right = true;
    for ((name, _, _), (direct, (got, took))) in
        REQUESTS.iter().zip(direct.into_iter().zip(results))
    {
        let expected = match direct.join() {
            Ok(Some((hash, nonce))) => Outcome::Answer { hash, nonce },
            _ => return Err(format!("the direct computation for {name} failed").into()),
        };
        let verdict = if *got == expected { "right" } else { "WRONG" };
        all_right &= *got == expected;
        println!("  {name:>6}: {got}  ({took:.2?})  {verdict}");
    }
    println!("chunks done by each miner: {}", pool.per_miner(", miner "));
    if all_right {
        Ok(())
    } else {
        Err("an answer was wrong".into())
    }
}

/// What the demo knows of the pool, from the scheduler's notes.
struct Progress {
    miners: Vec<ConnId>,
    chunks_per_miner: Vec<u32>,
    /// Nonces in all requests, and in the chunks answered so far.
    total: u64,
    done: u64,
    killed: Option<usize>,
    show: Display,
}

impl Progress {
    fn new(miners: Vec<ConnId>, total: u64) -> Progress {
        Progress {
            chunks_per_miner: vec![0; miners.len()],
            miners,
            total,
            done: 0,
            killed: None,
            show: Display::new(),
        }
    }

    /// Miners are numbered from 1 in the order they joined.
    fn miner(&self, id: ConnId) -> String {
        match self.miners.iter().position(|m| *m == id) {
            Some(i) => format!("miner {}", i + 1),
            None => format!("connection {id}"),
        }
    }

    /// Counts a note, and prints the decisions worth a line of their own;
    /// chunk by chunk progress goes to the progress line instead.
    fn on_note(&mut self, note: &Note) {
        let line = match note {
            Note::ChunkDone { miner, chunk, .. } => {
                self.done += chunk.upper - chunk.lower + 1;
                if let Some(i) = self.miners.iter().position(|m| m == miner) {
                    self.chunks_per_miner[i] += 1;
                }
                return;
            }
            Note::Accepted {
                request,
                chunks,
                deadline,
                ..
            } => format!("server: request {request} is {chunks} chunks, due at clock {deadline}"),
            Note::Requeued {
                request,
                miner,
                chunk,
            } => format!(
                "server: {} lost; its chunk {}..={} of request {request} goes to the next free miner",
                self.miner(*miner),
                thousands(chunk.lower),
                thousands(chunk.upper)
            ),
            Note::Answered { request, .. } => format!("server: request {request} answered"),
            Note::Cancelled { request, .. } => format!("server: request {request} cancelled"),
            Note::Rejected { conn, why } => format!("server: closing {}: {why}", self.miner(*conn)),
            Note::Joined { .. } | Note::Assigned { .. } | Note::Stale { .. } => return,
        };
        self.show.event(&line);
    }

    /// "12, miner 2: 9 (killed), ..." with `separator` between miners.
    fn per_miner(&self, separator: &str) -> String {
        let counts: Vec<String> = self
            .chunks_per_miner
            .iter()
            .enumerate()
            .map(|(i, chunks)| {
                let dead = if self.killed == Some(i + 1) {
                    " (killed)"
                } else {
                    ""
                };
                format!("{}: {chunks}{dead}", i + 1)
            })
            .collect();
        format!("miner {}", counts.join(separator))
    }

    fn progress(&mut self) {
        let width = 30;
        let filled = (self.done * width / self.total) as usize;
        let line = format!(
            "[{}{}] {:3}%  chunks done by {}",
            "#".repeat(filled),
            ".".repeat(width as usize - filled),
            self.done * 100 / self.total,
            self.per_miner(", ")
        );
        self.show.progress(&line);
    }
}

/// Timestamped event lines, and a progress line that redraws in place on a
/// terminal (elsewhere, such as in CI logs, it is printed once a second).
struct Display {
    started: Instant,
    terminal: bool,
    last_progress: Option<Instant>,
}

impl Display {
    fn new() -> Display {
        Display {
            started: Instant::now(),
            terminal: std::io::stdout().is_terminal(),
            last_progress: None,
        }
    }

    fn event(&mut self, line: &str) {
        let clear = if self.terminal { "\r\x1b[K" } else { "" };
        println!(
            "{clear}[{:6.2}s] {line}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn progress(&mut self, line: &str) {
        let now = Instant::now();
        if !self.terminal
            && self
                .last_progress
                .is_some_and(|t| now - t < Duration::from_secs(1))
        {
            return;
        }
        self.last_progress = Some(now);
        let at = self.started.elapsed().as_secs_f64();
        if self.terminal {
            print!("\r\x1b[K[{at:6.2}s] {line}");
            let _ = std::io::stdout().flush();
        } else {
            println!("[{at:6.2}s] {line}");
        }
    }

    fn finish(&mut self) {
        if self.terminal {
            println!();
        }
    }
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}
