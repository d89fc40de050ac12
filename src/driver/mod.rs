//! The threaded driver: sockets, threads, locks, channels and injected faults.
//!
//! This is the only part of the crate that performs I/O or reads the clock.
//! It makes no protocol decision: it moves datagrams, epoch ticks and user
//! calls into the cores of [`proto`](crate::proto) and carries out what they
//! return.
//!
//! * [`endpoint`]: how one input runs through the core (the outlet its
//!   outputs go to, the condition variables writers wait on), the
//!   [`Core`](endpoint::Core) and [`Role`](endpoint::Role) traits, starting
//!   and closing an instance;
//! * [`cores`]: the [`Core`](endpoint::Core) impls of the two cores of
//!   `proto` (the client's behind its mutex);
//! * [`roles`]: the [`Role`](endpoint::Role) impls of the two handles
//!   (where each core's outputs go);
//! * [`io`]: the socket, binding, never-blocking sends, the fault plumbing;
//! * [`threads`]: the receive loops, the epoch loop and the close manager;
//! * [`inbox`]: the queue a handle reads from;
//! * [`checks`]: the payload check shared by the writes;
//! * [`faults`], [`sys`], [`time`]: the fault injector, `recvmmsg`, deadlines.

pub(crate) mod checks;
pub(crate) mod cores;
pub(crate) mod endpoint;
pub(crate) mod faults;
pub(crate) mod inbox;
pub(crate) mod io;
pub(crate) mod roles;
pub(crate) mod sys;
pub(crate) mod threads;
pub(crate) mod time;
