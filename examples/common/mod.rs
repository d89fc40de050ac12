//! Command-line flags shared by the echo examples.

use clap::Args;
use liveseq::{Faults, Params};

/// The server's address: where a server binds, or where a client connects.
#[derive(Args, Debug)]
pub struct AddressArgs {
    /// Host (a name or an address).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0, for a server: any free port).
    #[arg(long, default_value_t = 9999)]
    pub port: u16,
}

impl AddressArgs {
    /// As `ToSocketAddrs` takes it.
    pub fn addr(&self) -> (&str, u16) {
        (self.host.as_str(), self.port)
    }
}

impl std::fmt::Display for AddressArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The protocol parameters and fault knobs of the reference runners.
#[derive(Args, Debug)]
pub struct ProtocolArgs {
    /// Epochs of silence before the peer is declared lost.
    #[arg(long, default_value_t = Params::default().epoch_limit)]
    pub epoch_limit: u32,
    /// Epoch length in milliseconds.
    #[arg(long, default_value_t = Params::default().epoch_millis)]
    pub epoch_millis: u64,
    /// Sliding window size.
    #[arg(long, default_value_t = Params::default().window_size)]
    pub window_size: u32,
    /// Most unacknowledged messages in flight (may exceed the window size;
    /// the window is then the limit).
    #[arg(long, default_value_t = Params::default().max_unacked_messages)]
    pub max_unacked: u32,
    /// Cap of the retransmission back-off, in epochs.
    #[arg(long, default_value_t = Params::default().max_backoff_interval)]
    pub max_backoff: u32,
    /// Percent of received datagrams to drop.
    #[arg(long, default_value_t = 0)]
    pub read_drop: u8,
    /// Percent of sent datagrams to drop.
    #[arg(long, default_value_t = 0)]
    pub write_drop: u8,
    /// Debug logging (through env_logger).
    #[arg(short, long)]
    pub verbose: bool,
}

impl ProtocolArgs {
    pub fn params(&self) -> Params {
        Params {
            epoch_limit: self.epoch_limit,
            epoch_millis: self.epoch_millis,
            window_size: self.window_size,
            max_unacked_messages: self.max_unacked,
            max_backoff_interval: self.max_backoff,
        }
    }

    pub fn faults(&self) -> Faults {
        Faults {
            read_drop_percent: self.read_drop,
            write_drop_percent: self.write_drop,
            ..Faults::default()
        }
    }

    pub fn init_logging(&self) {
        let level = if self.verbose { "debug" } else { "warn" };
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    }
}
