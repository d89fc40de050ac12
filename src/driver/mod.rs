//! The threaded driver: sockets, threads, locks, channels and injected faults.
//!
//! This is the only part of the crate that performs I/O or reads the clock.
//! It makes no protocol decision: it moves datagrams, epoch ticks and user
//! calls into the cores of [`proto`](crate::proto) and carries out what they
//! return.

pub(crate) mod endpoint;
pub(crate) mod faults;
pub(crate) mod sys;
pub(crate) mod time;
