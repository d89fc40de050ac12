//! A broadcast chat on the event API: the server relays each message to
//! every other connected client and announces joins and leaves.
//!
//! ```text
//! cargo run --example chat -- server --port 9999
//! cargo run --example chat -- client 127.0.0.1:9999     # in two or more terminals
//! ```
//!
//! A client writes each line of standard input as one message and prints
//! what the others say, as `ADDRESS: text`, and `* ADDRESS joined` or
//! `* ADDRESS left`. At end of input it closes. LSP has no close message, so
//! the others hear that it left only once the server declares it lost,
//! `epoch_limit` epochs later (10 s with the defaults; `--epoch-millis`
//! shortens it, on the server and the clients alike).
//!
//! The relay is [`relay`], a function of a [`Server`], so that
//! `tests/chat.rs` can run it in-process.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use liveseq::{Client, ConnId, Error, Params, Server, ServerEvent};

/// Relays messages between the server's clients until the server is closed.
///
/// Each message is sent to every other client as `PEER: text` (cut short if
/// the prefix makes it too long for one datagram), each join and leave as
/// `* PEER joined` and `* PEER left`. Every client sees any one sender's
/// messages in order, exactly once.
pub fn relay(server: &Server) -> Result<(), Error> {
    let mut peers: BTreeMap<ConnId, SocketAddr> = BTreeMap::new();
    loop {
        let done = match server.next_event() {
            Ok(ServerEvent::Connected { id, peer }) => {
                let done = broadcast(
                    server,
                    peers.keys().copied(),
                    format!("* {peer} joined").as_bytes(),
                );
                peers.insert(id, peer);
                done
            }
            Ok(ServerEvent::Message { id, payload }) => {
                let mut message = match peers.get(&id) {
                    Some(peer) => format!("{peer}: ").into_bytes(),
                    None => format!("connection {id}: ").into_bytes(),
                };
                let room = server.max_payload().saturating_sub(message.len());
                message.extend_from_slice(&payload[..payload.len().min(room)]);
                let others = peers.keys().copied().filter(|&other| other != id);
                broadcast(server, others, &message)
            }
            // `Closed` follows `close_conn`, which this relay never calls, but
            // a connection that ends either way has left.
            Ok(ServerEvent::Lost { id } | ServerEvent::Closed { id }) => match peers.remove(&id) {
                Some(peer) => broadcast(
                    server,
                    peers.keys().copied(),
                    format!("* {peer} left").as_bytes(),
                ),
                None => Ok(()),
            },
            Ok(_) => Ok(()),
            Err(err) => Err(err),
        };
        match done {
            Ok(()) => {}
            Err(Error::Closed) => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

/// Writes `message` to each connection in `to`.
///
/// [`Server::write`] never waits, so no member can hold up the others. Its
/// errors are about one connection (it ended between its last event and
/// this write, its peer stopped acknowledging, the memory budget is spent):
/// that member misses this message and the broadcast goes on. Only the
/// server's own end stops it.
pub fn broadcast(
    server: &Server,
    to: impl IntoIterator<Item = ConnId>,
    message: &[u8],
) -> Result<(), Error> {
    for id in to {
        match server.write(id, message) {
            Ok(()) => {}
            Err(err @ (Error::Closed | Error::Failed(_))) => return Err(err),
            Err(err) => log::debug!("chat: not relayed to connection {id}: {err}"),
        }
    }
    Ok(())
}

/// Writes each line as one message. A line too long for one message is
/// reported and skipped.
pub fn send_lines(client: &Client, lines: impl IntoIterator<Item = String>) -> Result<(), Error> {
    for line in lines {
        match client.write(line.as_bytes()) {
            Ok(()) => {}
            Err(Error::PayloadTooLarge { len, max }) => {
                eprintln!("chat: not sent: {len} bytes, at most {max} fit in a message")
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Prints each message as one line until the client is closed.
pub fn print_messages(
    client: &Client,
    mut out: impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        match client.read() {
            Ok(message) => {
                out.write_all(&message)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Err(Error::Closed) => return Ok(()),
            Err(err) => return Err(err.into()),
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "A broadcast chat over LSP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Relay messages between clients.
    Server {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to bind (0 picks a free one).
        #[arg(long, default_value_t = 9999)]
        port: u16,
        #[command(flatten)]
        timing: Timing,
    },
    /// Join the chat at ADDRESS (HOST:PORT).
    Client {
        address: String,
        #[command(flatten)]
        timing: Timing,
    },
}

#[derive(Args, Debug)]
struct Timing {
    /// Epoch length in milliseconds.
    #[arg(long, default_value_t = Params::default().epoch_millis)]
    epoch_millis: u64,
    /// Silent epochs before a peer counts as gone.
    #[arg(long, default_value_t = Params::default().epoch_limit)]
    epoch_limit: u32,
}

impl Timing {
    fn params(&self) -> Params {
        Params {
            epoch_millis: self.epoch_millis,
            epoch_limit: self.epoch_limit,
            ..Params::default()
        }
    }
}

fn main() {
    let result = match Cli::parse().command {
        Command::Server { host, port, timing } => serve(&host, port, timing.params()),
        Command::Client { address, timing } => chat(&address, timing.params()),
    };
    if let Err(err) = result {
        // Error's message leaves the cause to `source`: print the chain.
        let mut text = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(e) = cause {
            text = format!("{text}: {e}");
            cause = e.source();
        }
        eprintln!("chat: {text}");
        std::process::exit(1);
    }
}

fn serve(host: &str, port: u16, params: Params) -> Result<(), Error> {
    let server = Server::bind((host, port), params)?;
    println!("listening on {}", server.local_addr()?);
    relay(&server)
}

fn chat(address: &str, params: Params) -> Result<(), Error> {
    let client = Client::connect(address, params)?;
    println!(
        "* connected to {address} from port {}",
        client.local_addr()?.port()
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Err(err) = print_messages(&client, std::io::stdout().lock()) {
                // The main thread may be blocked on standard input.
                eprintln!("chat: {err}");
                std::process::exit(1);
            }
        });
        let stdin = std::io::stdin().lock();
        send_lines(
            &client,
            std::io::BufRead::lines(stdin).map_while(Result::ok),
        )?;
        // Waits until the server has everything we wrote; the printer then
        // sees `Closed` and returns.
        client.close()
    })
}
