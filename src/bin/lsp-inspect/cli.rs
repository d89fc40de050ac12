//! The command line, parsed by hand (no dependency for a dozen flags).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::check::CheckParams;
use crate::faults::{DirFaults, Faults};
use crate::proxy::{Config, MAX_CLIENTS};

/// What `--help` prints.
pub const USAGE: &str = "\
lsp-inspect: a proxy that records, checks and disturbs an LSP conversation

usage: lsp-inspect --listen 127.0.0.1:PORT --server HOST:PORT --epoch-millis MS [options]

Clients send to --listen; every datagram goes on to --server (one upstream
socket per client address) and the answers come back. Each datagram is
decoded, recorded and checked against the wire protocol (docs/PROTOCOL.md) as its
sender sent it; faults are applied after the check. Give the parameters the
endpoints run with: the checks depend on them.

protocol parameters (as the endpoints use them):
  --epoch-millis MS        epoch length (required)
  --epoch-limit N          epochs of silence before a connection is lost [5]
  --window-size N          sliding window [1]
  --max-unacked N          most unacknowledged messages [1]
  --max-backoff N          back-off cap in epochs [0]
  --jitter-ms MS           how late an endpoint's timer may fire [50 + epoch/2]

faults (each also as --NAME-to-server / --NAME-to-client for one direction):
  --drop PCT               drop datagrams
  --dup PCT                send datagrams twice
  --delay-ms MS            hold datagrams back MS milliseconds ...
  --delay PCT              ... this share of them [100 when --delay-ms is given]
  --reorder PCT            hold datagrams back a random 1..--reorder-ms ms so later ones overtake
  --reorder-ms MS          longest reorder hold [epoch/2, at least 2]
  --corrupt PCT            flip a payload bit of Data (the checksum catches it)
  --blackout A-B           drop everything from second A to second B (repeatable)
  --seed N                 seed of every random choice [1]: a run repeats exactly

run:
  --duration SECS          stop after SECS seconds (default: at Ctrl-C)
  --max-clients N          client addresses served at once [4096, at most 4096]; a new
                           one replaces the least recently active (those that never
                           answered the server first)
  --log FILE               write every datagram and violation as JSON lines
  --timeline FILE          write an HTML timeline at the end
  -h, --help               this text

It prints `listening on ADDR` once ready, each violation as it is found, and
a summary at the end whose last line is `violations: N`. The exit status is
0 whatever the traffic did (violations included), 2 for bad arguments, and 1
if the log or the timeline could not be written.";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print [`USAGE`].
    Help,
    /// Run the proxy, for `duration` if given.
    Run(Box<Config>, Option<Duration>),
}

fn percent(flag: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{flag} wants a percentage from 0 to 100, not {v:?}"
        )),
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} wants a whole number, not {v:?}"))
}

fn positive(flag: &str, v: &str) -> Result<u64, String> {
    match number::<u64>(flag, v)? {
        0 => Err(format!("{flag} must be positive")),
        n => Ok(n),
    }
}

fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if (0.0..1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{flag} wants seconds, not {v:?}")),
    }
}

fn addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{flag} wants HOST:PORT, not {v:?}"))
}

fn blackout(flag: &str, v: &str) -> Result<(Duration, Duration), String> {
    let bad = || format!("{flag} wants seconds A-B with A < B, not {v:?}");
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        seconds(flag, a).map_err(|_| bad())?,
        seconds(flag, b).map_err(|_| bad())?,
    );
    if a >= b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut listen = None;
    let mut server = None;
    let mut epoch_ms = None;
    let mut epoch_limit = 5u32;
    let mut window = 1u64;
    let mut max_unacked = 1u64;
    let mut max_backoff = 0u32;
    let mut jitter = None;
    let mut faults = Faults {
        seed: 1,
        ..Faults::default()
    };
    let mut delay_share: [Option<f64>; 2] = [None, None];
    let mut reorder_ms = None;
    let mut duration = None;
    let mut max_clients = MAX_CLIENTS;
    let mut log = None;
    let mut timeline = None;

    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if !flag.starts_with("--") {
            return Err(format!("unexpected argument {arg:?}"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))?,
        };
        let v = value.as_str();
        // A fault flag names both directions, or one with a suffix.
        let (base, dirs): (&str, &[usize]) = if let Some(b) = flag.strip_suffix("-to-server") {
            (b, &[0])
        } else if let Some(b) = flag.strip_suffix("-to-client") {
            (b, &[1])
        } else {
            (flag, &[0, 1])
        };
        let mut each = |set: &mut dyn FnMut(&mut DirFaults, usize)| {
            for &d in dirs {
                let f = if d == 0 {
                    &mut faults.to_server
                } else {
                    &mut faults.to_client
                };
                set(f, d);
            }
        };
        match base {
            "--drop" => {
                let p = percent(flag, v)?;
                each(&mut |f, _| f.drop = p);
            }
            "--dup" => {
                let p = percent(flag, v)?;
                each(&mut |f, _| f.dup = p);
            }
            "--delay-ms" => {
                let d = Duration::from_millis(number(flag, v)?);
                each(&mut |f, _| f.delay = d);
            }
            "--delay" => {
                let p = percent(flag, v)?;
                each(&mut |_, d| delay_share[d] = Some(p));
            }
            "--reorder" => {
                let p = percent(flag, v)?;
                each(&mut |f, _| f.reorder = p);
            }
            "--corrupt" => {
                let p = percent(flag, v)?;
                each(&mut |f, _| f.corrupt = p);
            }
            "--blackout" => {
                let b = blackout(flag, v)?;
                each(&mut |f, _| f.blackouts.push(b));
            }
            _ if dirs.len() == 1 => return Err(format!("unknown option {flag}")),
            "--listen" => listen = Some(addr(flag, v)?),
            "--server" => server = Some(addr(flag, v)?),
            "--epoch-millis" => epoch_ms = Some(positive(flag, v)?),
            "--epoch-limit" => {
                epoch_limit =
                    u32::try_from(positive(flag, v)?).map_err(|_| format!("{flag} is too large"))?
            }
            "--window-size" => window = positive(flag, v)?,
            "--max-unacked" => max_unacked = positive(flag, v)?,
            "--max-backoff" => max_backoff = number(flag, v)?,
            "--jitter-ms" => jitter = Some(Duration::from_millis(number(flag, v)?)),
            "--reorder-ms" => reorder_ms = Some(Duration::from_millis(positive(flag, v)?)),
            "--seed" => faults.seed = number(flag, v)?,
            "--duration" => duration = Some(seconds(flag, v)?),
            "--max-clients" => match positive(flag, v)? {
                n if n <= MAX_CLIENTS as u64 => max_clients = n as usize,
                _ => return Err(format!("{flag} is at most {MAX_CLIENTS}")),
            },
            "--log" => log = Some(v.into()),
            "--timeline" => timeline = Some(v.into()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }

    let listen = listen.ok_or("--listen is required")?;
    let server = server.ok_or("--server is required")?;
    let epoch = Duration::from_millis(epoch_ms.ok_or("--epoch-millis is required")?);
    for (d, f) in [&mut faults.to_server, &mut faults.to_client]
        .into_iter()
        .enumerate()
    {
        f.delay_pct = match delay_share[d] {
            Some(p) => p,
            None if !f.delay.is_zero() => 100.0,
            None => 0.0,
        };
    }
    faults.reorder_max = reorder_ms.unwrap_or((epoch / 2).max(Duration::from_millis(2)));
    Ok(Command::Run(
        Box::new(Config {
            listen,
            server,
            params: CheckParams {
                epoch,
                epoch_limit,
                window,
                max_unacked,
                max_backoff,
                jitter: jitter.unwrap_or_else(|| CheckParams::default_jitter(epoch)),
            },
            faults,
            log,
            timeline,
            print_violations: true,
            max_clients,
        }),
        duration,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str) -> (Config, Option<Duration>) {
        match parse(&args(s)) {
            Ok(Command::Run(c, d)) => (*c, d),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_shape() {
        let (c, d) = run(
            "--listen 127.0.0.1:0 --server 127.0.0.1:9 --epoch-millis 50 \
             --epoch-limit 7 --window-size 4 --max-unacked 3 --max-backoff 2 --drop 20 \
             --dup-to-client 5 --delay-ms 30 --blackout 1-2.5 --seed 9 --duration 3 \
             --log x.jsonl --timeline=t.html",
        );
        assert_eq!(c.params.epoch, Duration::from_millis(50));
        assert_eq!(
            (
                c.params.epoch_limit,
                c.params.window,
                c.params.max_unacked,
                c.params.max_backoff
            ),
            (7, 4, 3, 2)
        );
        assert_eq!(c.params.jitter, Duration::from_millis(75));
        assert_eq!(
            (c.faults.to_server.drop, c.faults.to_client.drop),
            (20.0, 20.0)
        );
        assert_eq!((c.faults.to_server.dup, c.faults.to_client.dup), (0.0, 5.0));
        assert_eq!(c.faults.to_client.delay_pct, 100.0);
        assert_eq!(
            c.faults.to_server.blackouts,
            [(Duration::from_secs(1), Duration::from_millis(2500))]
        );
        assert_eq!(c.faults.seed, 9);
        assert_eq!(d, Some(Duration::from_secs(3)));
        assert_eq!(c.timeline.as_deref(), Some(std::path::Path::new("t.html")));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let base = "--listen 127.0.0.1:0 --server 127.0.0.1:9 --epoch-millis 50";
        for (extra, want) in [
            ("--drop 101", "--drop wants a percentage"),
            ("--drop", "--drop needs a value"),
            ("--window-size 0", "--window-size must be positive"),
            ("--blackout 3-1", "--blackout wants seconds A-B"),
            ("--frobnicate 1", "unknown option --frobnicate"),
            ("--seed-to-client 1", "unknown option --seed-to-client"),
            ("stray", "unexpected argument"),
        ] {
            let err = parse(&args(&format!("{base} {extra}"))).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
        }
        assert!(parse(&args("--listen 127.0.0.1:0 --server 127.0.0.1:9"))
            .unwrap_err()
            .contains("--epoch-millis is required"));
        assert!(matches!(parse(&args("--help")), Ok(Command::Help)));
    }
}
