//! The settings both builders share, and the one check they pass before a
//! socket is bound.
//!
//! [`ClientBuilder`](crate::ClientBuilder) and
//! [`ServerBuilder`](crate::ServerBuilder) each hold an [`Options`]; their
//! setters of these six settings (each documented for its own side) write
//! here, and [`Options::check`] validates them all and fills in the defaults.

use crate::driver::faults::Faults;
use crate::proto::{
    max_payload, Limit, DEFAULT_INBOX, DEFAULT_MAX_DATAGRAM, DEFAULT_SEND_BUFFER, MAX_DATAGRAM,
};
use crate::{Error, Params};

/// What a client and a server are both configured with; `None` is the default.
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    pub(crate) params: Params,
    pub(crate) faults: Faults,
    pub(crate) max_datagram_size: Option<usize>,
    pub(crate) ack_coalescing: Option<bool>,
    pub(crate) send_buffer: Option<Limit>,
    pub(crate) inbox: Option<Limit>,
}

/// [`Options`] that passed [`Options::check`], with the defaults filled in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checked {
    pub(crate) params: Params,
    pub(crate) faults: Faults,
    /// The largest payload that fits the largest datagram.
    pub(crate) max_payload: usize,
    pub(crate) coalesce_acks: bool,
    pub(crate) send_buffer: Limit,
    pub(crate) inbox: Limit,
}

impl Options {
    /// Validates every setting (the parameters first, then the datagram
    /// size, the send buffer and the inbox: the first that is wrong is the
    /// error) and fills in the defaults.
    pub(crate) fn check(&self) -> Result<Checked, Error> {
        self.params.validate()?;
        let max_datagram = self.max_datagram_size.unwrap_or(DEFAULT_MAX_DATAGRAM);
        check_datagram_size(max_datagram)?;
        let send_buffer = self.send_buffer.unwrap_or(DEFAULT_SEND_BUFFER);
        let inbox = self.inbox.unwrap_or(DEFAULT_INBOX);
        check_limit("send_buffer", send_buffer)?;
        check_limit("inbox", inbox)?;
        Ok(Checked {
            params: self.params,
            faults: self.faults,
            max_payload: max_payload(max_datagram),
            coalesce_acks: self.ack_coalescing.unwrap_or(true),
            send_buffer,
            inbox,
        })
    }
}

/// Validates a configured maximum datagram size.
fn check_datagram_size(size: usize) -> Result<(), Error> {
    if !(DEFAULT_MAX_DATAGRAM / 4..=MAX_DATAGRAM).contains(&size) {
        return Err(Error::InvalidParams {
            field: "max_datagram_size",
            reason: "must be between 368 and 65507",
        });
    }
    Ok(())
}

/// Validates a send buffer or inbox limit.
fn check_limit(field: &'static str, limit: Limit) -> Result<(), Error> {
    if limit.messages == 0 || limit.bytes == 0 {
        return Err(Error::InvalidParams {
            field,
            reason: "must allow at least one message and one byte",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_are_filled_in() {
        let checked = Options::default().check().unwrap();
        assert_eq!(checked.max_payload, max_payload(DEFAULT_MAX_DATAGRAM));
        assert!(checked.coalesce_acks);
        assert_eq!(checked.send_buffer, DEFAULT_SEND_BUFFER);
        assert_eq!(checked.inbox, DEFAULT_INBOX);
    }

    #[test]
    fn each_setting_is_checked_in_order() {
        let field = |options: Options| match options.check() {
            Err(Error::InvalidParams { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let empty = Some(Limit {
            messages: 0,
            bytes: 1,
        });
        let datagram = |size| Options {
            max_datagram_size: Some(size),
            ..Options::default()
        };
        assert_eq!(
            field(datagram(DEFAULT_MAX_DATAGRAM / 4 - 1)),
            "max_datagram_size"
        );
        assert_eq!(field(datagram(MAX_DATAGRAM + 1)), "max_datagram_size");
        assert!(datagram(DEFAULT_MAX_DATAGRAM / 4).check().is_ok());
        assert!(datagram(MAX_DATAGRAM).check().is_ok());
        let both = Options {
            send_buffer: empty,
            inbox: empty,
            ..Options::default()
        };
        assert_eq!(field(both), "send_buffer");
        assert_eq!(
            field(Options {
                inbox: empty,
                ..Options::default()
            }),
            "inbox"
        );
        let params = Params {
            window_size: 0,
            ..Params::default()
        };
        let first = Options {
            params,
            send_buffer: empty,
            ..Options::default()
        };
        assert_eq!(field(first), "window_size");
    }
}
