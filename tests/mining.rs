//! The mining examples end to end, plus the unit tests that live beside
//! their code in examples/mining/ (the `#[cfg(test)]` modules there run as
//! part of this binary: `cargo test --test mining`).
//!
//! The end-to-end tests run the programs' own code (`mining::server::serve`,
//! `Miner`, `mining::client::request`) on threads over real loopback sockets
//! rather than spawning the example binaries: a test can then kill a miner
//! exactly when it has started a chunk, follow every scheduling decision as
//! it is made, and needs no binaries built beforehand. The course's own test
//! programs, which do run our binaries, are the opt-in tests at the end.

// Shared with the mining programs and the demo; the tests do not use all of it.
#[allow(dead_code)]
#[path = "../examples/mining/mod.rs"]
mod mining;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use liveseq::{Client, ConnId, Params, Server};

use mining::client::{request, Outcome};
use mining::hash::min_hash;
use mining::message::Message;
use mining::miner::{Exit, Miner, Report};
use mining::scheduler::{Note, RequestId};

/// Short epochs so that losses show within a fraction of a second; six of
/// them, so that a miner hashing on a busy machine is not taken for lost.
fn params() -> Params {
    Params {
        epoch_millis: 30,
        epoch_limit: 6,
        ..Params::default()
    }
}

/// Release builds hash some 50 times faster than debug builds; tests whose
/// outcome depends on hashing taking longer than a few round trips scale
/// their chunks by this, so both builds do comparable work per chunk.
const SCALE: u64 = if cfg!(debug_assertions) { 1 } else { 20 };

/// A watchdog for waits that an event ends: generous, since a failure
/// shows as a hang and the machine may be busy.
const PATIENCE: Duration = Duration::from_secs(60);

/// A server running `serve` on its own thread, with its decisions on a channel.
struct Pool {
    server: Arc<Server>,
    addr: SocketAddr,
    notes: Receiver<Note>,
    serving: Option<JoinHandle<()>>,
}

impl Pool {
    fn start(chunk_size: u64) -> Pool {
        Pool::serve(Server::bind("127.0.0.1:0", params()).unwrap(), chunk_size)
    }

    fn serve(server: Server, chunk_size: u64) -> Pool {
        let server = Arc::new(server);
        let addr = server.local_addr().unwrap();
        let (tx, notes) = unbounded();
        let serving = {
            let server = server.clone();
            thread::spawn(move || {
                mining::server::serve(&server, chunk_size, |note| {
                    let _ = tx.send(note.clone());
                })
            })
        };
        Pool {
            server,
            addr,
            notes,
            serving: Some(serving),
        }
    }

    /// The notes up to and including the first that `wanted` picks.
    fn until(&self, mut wanted: impl FnMut(&Note) -> bool) -> Vec<Note> {
        let mut seen = Vec::new();
        loop {
            let note = self
                .notes
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("no such note; saw {seen:#?}"));
            let done = wanted(&note);
            seen.push(note);
            if done {
                return seen;
            }
        }
    }

    /// Starts a miner and waits until the scheduler has it.
    fn miner(&self) -> RunningMiner {
        self.joined(RunningMiner::start(self.addr, false))
    }

    /// A miner killed as it starts its first chunk.
    fn doomed_miner(&self) -> RunningMiner {
        self.joined(RunningMiner::start(self.addr, true))
    }

    fn joined(&self, miner: RunningMiner) -> RunningMiner {
        self.until(|n| *n == Note::Joined { miner: miner.id });
        miner
    }

    /// Sends a request from a new client on its own thread.
    fn ask(&self, data: &str, max_nonce: u64) -> JoinHandle<Outcome> {
        let (addr, data) = (self.addr, data.to_string());
        thread::spawn(move || request(addr, params(), &data, max_nonce))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Miners still connected would keep a draining close waiting on
        // nothing; the deadline only bounds it.
        let _ = self.server.close_timeout(Duration::from_secs(1));
        if let Some(serving) = self.serving.take() {
            let _ = serving.join();
        }
    }
}

struct RunningMiner {
    id: ConnId,
    reports: Receiver<Report>,
    running: JoinHandle<Exit>,
}

impl RunningMiner {
    /// A miner on its own thread; with `dies_on_first_chunk` it is killed as
    /// it starts its first chunk, from inside its own loop, so the chunk is
    /// left unfinished however fast this build hashes.
    fn start(addr: SocketAddr, dies_on_first_chunk: bool) -> RunningMiner {
        let miner = Miner::join(addr, params()).unwrap();
        let (id, killer) = (miner.conn_id(), miner.killer());
        let (tx, reports) = unbounded();
        let running = thread::spawn(move || {
            miner.run(|report| {
                if dies_on_first_chunk && matches!(report, Report::Started { .. }) {
                    killer.kill();
                }
                let _ = tx.send(report);
            })
        });
        RunningMiner {
            id,
            reports,
            running,
        }
    }
}

/// The answer computed directly, on this thread.
fn expected(data: &str, max_nonce: u64) -> Outcome {
    let (hash, nonce) = min_hash(data, 0, max_nonce, &AtomicBool::new(false)).unwrap();
    Outcome::Answer { hash, nonce }
}

fn request_of(notes: &[Note], wanted_client: ConnId) -> Option<RequestId> {
    notes.iter().find_map(|n| match n {
        Note::Accepted {
            request, client, ..
        } if *client == wanted_client => Some(*request),
        _ => None,
    })
}

/// How many miners did chunks, from the scheduler's notes.
fn miners_used(notes: &[Note]) -> usize {
    let mut count: HashMap<ConnId, usize> = HashMap::new();
    for note in notes {
        if let Note::ChunkDone { miner, .. } = note {
            *count.entry(*miner).or_default() += 1;
        }
    }
    count.len()
}

#[test]
fn three_miners_and_two_clients_get_the_exact_minimum() {
    let pool = Pool::start(2_000);
    let miners: Vec<_> = (0..3).map(|_| pool.miner()).collect();
    let hello = pool.ask("hello", 30_000);
    let world = pool.ask("world", 20_000);
    let mut answered = 0;
    let notes = pool.until(|n| {
        answered += matches!(n, Note::Answered { .. }) as usize;
        answered == 2
    });
    assert_eq!(hello.join().unwrap(), expected("hello", 30_000));
    assert_eq!(world.join().unwrap(), expected("world", 20_000));
    // 26 chunks among three miners: none was left idle.
    assert_eq!(miners_used(&notes), 3);
    // A miner shuts down once it loses the server.
    drop(pool);
    for miner in miners {
        assert_eq!(miner.running.join().unwrap(), Exit::ServerLost);
    }
}

#[test]
fn a_miner_killed_mid_chunk_has_its_chunk_redone_by_a_miner_that_joins_later() {
    let pool = Pool::start(20_000);
    let victim = pool.doomed_miner();
    let asked = pool.ask("kill", 59_999); // three chunks
                                          // The only miner dies in the middle of the first chunk.
    assert!(matches!(
        victim.reports.recv_timeout(PATIENCE),
        Ok(Report::Started { lower: 0, .. })
    ));
    assert_eq!(victim.running.join().unwrap(), Exit::Killed);
    // The server notices the silence and puts the chunk back; with no miner
    // left the work waits.
    pool.until(|n| {
        matches!(n, Note::Requeued { miner, chunk, .. } if *miner == victim.id && chunk.lower == 0)
    });
    // A miner that joins now gets the dead one's chunk at once.
    let rescuer = pool.miner();
    let notes = pool.until(|n| matches!(n, Note::Assigned { .. }));
    match notes.last() {
        Some(Note::Assigned { miner, chunk, .. }) => {
            assert_eq!((*miner, chunk.lower, chunk.upper), (rescuer.id, 0, 19_999));
        }
        other => panic!("expected an assignment, got {other:?}"),
    }
    let notes = pool.until(|n| matches!(n, Note::Answered { .. }));
    assert_eq!(asked.join().unwrap(), expected("kill", 59_999));
    let rescued = notes
        .iter()
        .filter(|n| matches!(n, Note::ChunkDone { miner, .. } if *miner == rescuer.id));
    assert_eq!(rescued.count(), 3);
}

#[test]
fn a_lost_clients_request_is_dropped_and_the_miner_moves_on() {
    let pool = Pool::start(5_000);
    let miner = pool.miner();
    // A client asks for far more than will ever be done here, then dies.
    let greedy = Client::connect(pool.addr, params()).unwrap();
    let ask = Message::Request {
        data: "greedy".into(),
        lower: 0,
        upper: 1 << 40,
    };
    greedy.write(&ask.encode()).unwrap();
    let notes = pool.until(|n| matches!(n, Note::Assigned { .. }));
    let greedy_request = request_of(&notes, greedy.conn_id()).unwrap();
    greedy.close_timeout(Duration::ZERO).ok(); // silent from now on, like a crash

    let notes = pool.until(|n| matches!(n, Note::Cancelled { .. }));
    assert!(matches!(
        notes.last(),
        Some(Note::Cancelled { request, chunks_left, .. })
            if *request == greedy_request && *chunks_left > 200_000_000
    ));
    // The chunk on the miner at that moment is finished and thrown away,
    // and nothing more of the dead client's request is handed out.
    let modest = pool.ask("modest", 9_999);
    let notes = pool.until(|n| matches!(n, Note::Answered { .. }));
    for note in &notes {
        if let Note::Assigned { request, .. } = note {
            assert_ne!(*request, greedy_request, "work for a lost client");
        }
    }
    assert!(notes.contains(&Note::Stale {
        request: greedy_request,
        miner: miner.id,
    }));
    assert_eq!(modest.join().unwrap(), expected("modest", 9_999));
}

#[test]
fn a_small_request_sent_after_a_large_one_finishes_long_before_it() {
    let chunk = 1_000 * SCALE;
    let (large_max, small_max) = (100 * chunk - 1, 4 * chunk - 1); // 100 and 4 chunks
    let pool = Pool::start(chunk);
    let _miners: Vec<_> = (0..2).map(|_| pool.miner()).collect();
    let start = Instant::now();
    let large = {
        let ask = pool.ask("large", large_max);
        thread::spawn(move || (ask.join().unwrap(), start.elapsed()))
    };
    // Both miners are busy with the large request when the small one comes.
    let mut notes = pool.until(|n| matches!(n, Note::Assigned { .. }));
    notes.extend(pool.until(|n| matches!(n, Note::Assigned { .. })));
    let large_request = match notes[0] {
        Note::Accepted { request, .. } => request,
        ref other => panic!("expected the large request first, got {other:?}"),
    };
    let small_sent = Instant::now();
    let small = pool.ask("small", small_max);
    let small_outcome = small.join().unwrap();
    let small_took = small_sent.elapsed();
    let (large_outcome, large_took) = large.join().unwrap();
    assert_eq!(small_outcome, expected("small", small_max));
    assert_eq!(large_outcome, expected("large", large_max));

    // Scheduling, exactly: from the small request's arrival until its last
    // chunk was handed out, every free miner took one of its chunks; and the
    // small one finished first.
    let notes =
        pool.until(|n| matches!(n, Note::Answered { request, .. } if *request == large_request));
    let arrived = notes
        .iter()
        .position(|n| matches!(n, Note::Accepted { .. }))
        .unwrap();
    let small_request = large_request + 1;
    let mut small_chunks_left = 4;
    let mut order = Vec::new();
    let mut large_chunks_done = 0;
    let mut large_done_when_small_answered = None;
    for note in &notes[arrived..] {
        match note {
            Note::Assigned { request, .. } if small_chunks_left > 0 => {
                assert_eq!(*request, small_request, "the large request went first");
                small_chunks_left -= 1;
            }
            Note::ChunkDone { request, .. } if *request == large_request => {
                large_chunks_done += 1;
            }
            Note::Answered { request, .. } => {
                order.push(*request);
                if *request == small_request {
                    large_done_when_small_answered = Some(large_chunks_done);
                }
            }
            _ => {}
        }
    }
    assert_eq!(order, [small_request, large_request]);
    // The measure, printed rather than asserted: it is timing, and a shared
    // machine can stall any thread for longer than a few chunks take.
    println!(
        "small request: {small_took:?}; large request: {large_took:?}; \
         the large one did {} of its 100 chunks while the small one was served",
        large_done_when_small_answered.unwrap_or_default()
    );
}

#[test]
fn the_answer_does_not_depend_on_the_chunk_size() {
    // The same request through pools cutting it differently, down to one
    // nonce per chunk and up to one chunk for everything.
    let direct = expected("chunks", 600);
    for chunk_size in [1, 7, 100, 601, u64::MAX] {
        let pool = Pool::start(chunk_size);
        let _miners: Vec<_> = (0..2).map(|_| pool.miner()).collect();
        let answer = pool.ask("chunks", 600).join().unwrap();
        assert_eq!(answer, direct, "chunk size {chunk_size}");
    }
}

#[test]
fn a_client_with_no_server_prints_disconnected() {
    // Nothing listens on a port just released.
    let addr = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let fast = Params {
        epoch_millis: 20,
        epoch_limit: 3,
        ..Params::default()
    };
    let outcome = request(addr, fast, "anyone", 10);
    assert_eq!(outcome, Outcome::Disconnected);
    assert_eq!(outcome.to_string(), "Disconnected");
    assert_eq!(
        Outcome::Answer { hash: 5, nonce: 7 }.to_string(),
        "Result 5 7"
    );
}

#[test]
fn a_miner_that_joins_mid_request_is_put_to_work() {
    let chunk = 500 * SCALE;
    let max = 200 * chunk - 1; // 200 chunks
    let pool = Pool::start(chunk);
    let _first = pool.miner();
    let asked = pool.ask("late", max);
    pool.until(|n| matches!(n, Note::ChunkDone { .. }));
    let _late = pool.miner();
    let notes = pool.until(|n| matches!(n, Note::Answered { .. }));
    assert_eq!(asked.join().unwrap(), expected("late", max));
    // Both did chunks after the late one joined.
    assert_eq!(miners_used(&notes), 2);
}

#[test]
fn a_client_that_acknowledges_nothing_is_closed_and_the_pool_goes_on() {
    // A send buffer of one message: the second answer to a client that
    // acknowledges nothing finds it full. Waiting for room would stall the
    // server's only thread; it closes the connection instead.
    let server = Server::builder()
        .params(params())
        .send_buffer(1, 1 << 20)
        .bind("127.0.0.1:0")
        .unwrap();
    let pool = Pool::serve(server, 10);
    let _miner = pool.miner();
    let deaf = DeafClient::connect(pool.addr);
    for _ in 0..3 {
        deaf.send(&Message::Request {
            data: "deaf".into(),
            lower: 0,
            upper: 0,
        });
    }
    let notes = pool.until(|n| matches!(n, Note::Rejected { .. }));
    assert!(matches!(
        notes.last(),
        Some(Note::Rejected { conn, why }) if *conn == deaf.id && why.contains("acknowledge")
    ));
    assert_eq!(pool.ask("after", 99).join().unwrap(), expected("after", 99));
}

/// An LSP client played by hand on a raw socket: it connects, sends Data
/// and heartbeats, and never acknowledges anything it is sent.
struct DeafClient {
    socket: Arc<std::net::UdpSocket>,
    id: ConnId,
    conn_id: u32,
    next_seq: AtomicU64,
    stop: Arc<AtomicBool>,
}

impl DeafClient {
    fn connect(server: SocketAddr) -> DeafClient {
        use liveseq::proto::{Message as Lsp, MsgType};
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(server).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        let isn = 100;
        let mut buf = Vec::new();
        Lsp::connect(isn).encode(&mut buf);
        socket.send(&buf).unwrap();
        let mut datagram = [0u8; 2048];
        let conn_id = loop {
            let n = socket.recv(&mut datagram).expect("the server's Ack");
            if let Ok(m) = Lsp::decode(&datagram[..n]) {
                if m.kind == MsgType::Ack && m.seq_num == isn {
                    break m.conn_id;
                }
            }
        };
        // Heartbeats, so that the server keeps the connection: this client
        // is alive, it just acknowledges nothing.
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (socket, stop) = (socket.clone(), stop.clone());
            let mut heartbeat = Vec::new();
            Lsp::ack(conn_id, 0).encode(&mut heartbeat);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = socket.send(&heartbeat);
                    thread::sleep(Duration::from_millis(params().epoch_millis));
                }
            });
        }
        DeafClient {
            socket,
            id: ConnId::from(conn_id),
            conn_id,
            next_seq: (isn + 1).into(),
            stop,
        }
    }

    fn send(&self, msg: &Message) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let payload = msg.encode();
        let mut buf = Vec::new();
        liveseq::proto::Message::data(self.conn_id, seq, &payload).encode(&mut buf);
        self.socket.send(&buf).unwrap();
    }
}

impl Drop for DeafClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// The course's own test programs, run against our example binaries. Opt-in:
//
//     cargo build --examples   # the same profile as the test run
//     LIVESEQ_BITCOIN_TESTS=/folder/with/ctest/and/mtest cargo test --test mining course_ -- --ignored
//
// `ctest` plays the server and miners and runs our client several times
// (once with the server failing); `mtest` plays the server and runs our
// miner. Both start the programs at `../../../src/github.com/cmu440/bitcoin/
// {client/client,miner/miner}` relative to their working directory, so the
// test lays out a temporary tree of symbolic links to our binaries. They
// report on standard output, ending with `PASS` or `FAIL`, and exit 0 either
// way. One test runs both, one after the other: run at once they can pick
// the same port for their server, and one then fails to start.

#[test]
#[ignore = "needs the course's test programs: set LIVESEQ_BITCOIN_TESTS (see tests/README.md)"]
fn course_ctest_and_mtest_pass_with_our_client_and_miner() {
    run_course_test("ctest");
    run_course_test("mtest");
}

fn run_course_test(name: &str) {
    let Some(folder) = std::env::var_os("LIVESEQ_BITCOIN_TESTS") else {
        panic!(
            "set LIVESEQ_BITCOIN_TESTS to the folder withholding the course's \
             ctest and mtest to run {name} against our mining programs (see tests/README.md)"
        );
    };
    let program = std::path::Path::new(&folder).join(name);
    assert!(
        program.is_file(),
        "no {} (from LIVESEQ_BITCOIN_TESTS)",
        program.display()
    );
    let tree = CourseTree::new(name);
    let started = Instant::now();
    let output = std::process::Command::new(&program)
        .current_dir(&tree.work_dir)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()));
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{name} took {:?}:\n{report}", started.elapsed());
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    assert!(!lines.contains(&"FAIL"), "{name} failed");
    assert_eq!(lines.last(), Some(&"PASS"), "{name} did not pass");
}

/// A temporary copy of the course's layout, its programs linked to ours.
struct CourseTree {
    root: std::path::PathBuf,
    work_dir: std::path::PathBuf,
}

impl CourseTree {
    #[cfg(unix)]
    fn new(name: &str) -> CourseTree {
        use std::fs;
        // Examples are built next to the test binaries: target/<profile>/examples.
        let profile_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .to_path_buf();
        let root = std::env::temp_dir().join(format!("liveseq-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let work_dir = root.join("bin/linux/amd64");
        fs::create_dir_all(&work_dir).unwrap();
        for (role, ours) in [("client", "mining_client"), ("miner", "mining_miner")] {
            let binary = profile_dir.join("examples").join(ours);
            assert!(
                binary.is_file(),
                "{} is missing: build it first with `cargo build --examples` (same profile)",
                binary.display()
            );
            let dir = root.join("src/github.com/cmu440/bitcoin").join(role);
            fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(&binary, dir.join(role)).unwrap();
        }
        CourseTree { root, work_dir }
    }

    #[cfg(not(unix))]
    fn new(_name: &str) -> CourseTree {
        panic!("the course's test programs are run here on Unix only");
    }
}

impl Drop for CourseTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
