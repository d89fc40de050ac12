//! Checks of what writes are given (the builders' settings are checked in
//! [`options`](crate::options)).

use crate::Error;

/// Checks a write against the largest payload that fits one datagram.
pub(crate) fn check_payload(len: usize, max: usize) -> Result<(), Error> {
    if len > max {
        Err(Error::PayloadTooLarge { len, max })
    } else {
        Ok(())
    }
}
