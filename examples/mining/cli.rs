//! The protocol flags the three programs share.

use clap::Args;
use liveseq::Params;

/// LSP timing. The defaults are the course's (`lsp.NewParams()`), so the
/// programs work with Go peers and the course's test programs as they are.
#[derive(Args, Debug, Clone, Copy)]
pub struct ProtocolFlags {
    /// Length of an epoch, in milliseconds: the retransmission and heartbeat timer.
    #[arg(long, default_value_t = Params::default().epoch_millis)]
    pub epoch_millis: u64,
    /// Silent epochs before the peer is declared lost.
    #[arg(long, default_value_t = Params::default().epoch_limit)]
    pub epoch_limit: u32,
    /// Log what happens (at debug level, through env_logger; RUST_LOG overrides).
    #[arg(short, long)]
    pub verbose: bool,
}

impl ProtocolFlags {
    pub fn params(&self) -> Params {
        Params {
            epoch_millis: self.epoch_millis,
            epoch_limit: self.epoch_limit,
            ..Params::default()
        }
    }

    pub fn init_logging(&self) {
        let level = if self.verbose { "debug" } else { "warn" };
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        protocol: ProtocolFlags,
    }

    #[test]
    fn defaults_are_the_courses_and_flags_override_them() {
        let plain = Command::parse_from(["prog"]).protocol.params();
        assert_eq!(plain, Params::default());
        assert_eq!((plain.epoch_millis, plain.epoch_limit), (2000, 5));
        let fast = Command::parse_from(["prog", "--epoch-millis", "20", "--epoch-limit", "3"]);
        let fast = fast.protocol.params();
        assert_eq!((fast.epoch_millis, fast.epoch_limit), (20, 3));
        assert_eq!(fast.window_size, Params::default().window_size);
    }
}
