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
//! * [`rooms`]: the condition variables writers wait on for room;
//! * [`io`]: the socket, binding, never-blocking sends, the fault plumbing;
//! * [`threads`]: the receive loops, the epoch loop and the close manager;
//! * [`inbox`]: the queue a handle reads from;
//! * [`checks`]: the payload check shared by the writes;
//! * [`faults`], [`sys`], [`time`]: the fault injector, `recvmmsg`, deadlines.
//!
//! # The locks, in one place
//!
//! Every lock of an instance, by the name its declaration gives it (each
//! field's doc starts with "Lock `name`"), what it guards, and where it
//! sits in the one order they are taken in: a lock may be taken while
//! holding only those above it in this list, never the other way round.
//! None is held across a wait for the network or for another thread,
//! except a room stripe's, which a waiting writer holds only to check its
//! condition.
//!
//! | order | lock | guards | held for |
//! | --- | --- | --- | --- |
//! | 1 | `room stripe` (`Rooms`, 64 per instance) | a writer's check for room, against a lost wake-up | the check (`blocked`), which takes 2 or 3 |
//! | 2 | `client core` (`ClientCell`) | a client's whole state machine | one input, its sends and its outputs |
//! | 2 | `connection` (a server's `Slot`, one each) | one connection's state machine and flow control | one input to it (a batch's run of its datagrams), its sends and its outputs |
//! | 3 | `table` (`ServerCore`, a read-write lock) | the routing table, admission order, ids, ended connections | a lookup or an update, never a connection's work; admission alone locks the new (unreachable) connection under it |
//! | 4 | `socket` (`Io`, read-write) | the socket itself (written once, to release the port at close) | one send, read-locked |
//! | 4 | `peer` (`Io`) | where a client's socket is connected | one send |
//! | 4 | `reorder fault`, `fault dice` (`Io`, `Injector`; test hooks only) | datagrams held back behind the next, the faults' random generator | one send |
//! | 4 | `subscribers` (`Subscribers`) | the lifecycle event channels | one event's fan-out |
//! | 4 | `server address`, `pending connect`, `lost seen` (the client's role and handle) | which server address a client uses, the connect call's reply channel, the last loss read | one output, or one read |
//! | 4 | `discarding`, `withholding` (the server's role) | connections closed by the application whose messages are dropped, connections waiting for a read | one output, or one read |
//! | 4 | `router` (a listener's, read-write) | each connection's inbox | one output routed, or one accept |
//! | 5 | `inbox shutdown`, `connection end` (`Inbox`, `Connection`) | an inbox's shutdown signal, how a listener's connection ended | a store or a load |
//! | – | `failure`, `manager` (`Shared`, `Endpoint`) | why the instance failed, the close manager's handle | a store, or a join at close (no other lock held) |
//!
//! Locks at the same level are never held together. The cores' own locks
//! (2 and 3) are described with [`ServerCore`](crate::proto::ServerCore).

pub(crate) mod checks;
pub(crate) mod cores;
pub(crate) mod endpoint;
pub(crate) mod faults;
pub(crate) mod inbox;
pub(crate) mod io;
pub(crate) mod roles;
pub(crate) mod rooms;
pub(crate) mod sys;
pub(crate) mod threads;
pub(crate) mod time;
