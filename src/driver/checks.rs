//! Checks of the parameters the builders and writes are given.

use crate::proto::{Limit, DEFAULT_MAX_DATAGRAM, MAX_DATAGRAM};
use crate::Error;

/// Checks a write against the largest payload that fits one datagram.
pub(crate) fn check_payload(len: usize, max: usize) -> Result<(), Error> {
    if len > max {
        Err(Error::PayloadTooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Validates a configured maximum datagram size.
pub(crate) fn check_datagram_size(size: usize) -> Result<(), Error> {
    if !(DEFAULT_MAX_DATAGRAM / 4..=MAX_DATAGRAM).contains(&size) {
        return Err(Error::InvalidParams {
            field: "max_datagram_size",
            reason: "must be between 368 and 65507",
        });
    }
    Ok(())
}

/// Validates a send buffer or inbox limit.
pub(crate) fn check_limit(field: &'static str, limit: Limit) -> Result<(), Error> {
    if limit.messages == 0 || limit.bytes == 0 {
        return Err(Error::InvalidParams {
            field,
            reason: "must allow at least one message and one byte",
        });
    }
    Ok(())
}
