//! The application sides of the two handles as the driver sees them: the
//! [`Role`] trait, implemented next to each other as [`cores`](super::cores)
//! implements [`Core`](super::endpoint::Core), so that where each core's
//! outputs go is in one place.
//!
//! A [`ClientRole`] feeds one [`Client`](crate::Client)'s inbox and its
//! waiting connect; a [`ServerRole`] feeds a [`Server`](crate::Server)'s
//! inbox, or each [`Connection`](crate::Connection)'s through a listener's
//! [`Router`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::cores::ClientCell;
use super::endpoint::{Published, Role};
use super::inbox::Inbox;
use crate::lifecycle::Subscribers;
use crate::listener::Router;
use crate::proto::{ClientCore, ClientOutput, ServerCore, ServerOutput};
use crate::{ConnId, Error, ServerEvent};

/// What a client's `read` returns, in order.
pub(crate) enum Item {
    Data(Vec<u8>),
    Lost(ConnId),
    Reconnected { old: ConnId, new: ConnId },
}

/// The client's application side: where the core's outputs go.
pub(crate) struct ClientRole {
    /// Lock `server address`.
    ///
    /// The address in use, for events (the core's changes only while the
    /// first connect moves on from a refusal).
    server: Mutex<SocketAddr>,
    pub(crate) inbox: Inbox<Item>,
    pub(crate) events: Subscribers,
    /// Lock `pending connect`.
    ///
    /// Told once whether the first connect succeeded.
    connected: Mutex<Option<Sender<Result<ConnId, Error>>>>,
    /// The connection holds Data for lack of room ([`ClientOutput::Withholding`]):
    /// a read then tells the core at once, since the server waits for the
    /// acknowledgements that follow.
    pub(crate) withholding: AtomicBool,
}

impl ClientRole {
    /// A role for a client dialing `server`, whose first connect's outcome
    /// goes to `connected`.
    pub(crate) fn new(
        server: SocketAddr,
        events: Subscribers,
        connected: Sender<Result<ConnId, Error>>,
    ) -> ClientRole {
        ClientRole {
            server: Mutex::new(server),
            inbox: Inbox::new(),
            events,
            connected: Mutex::new(Some(connected)),
            withholding: AtomicBool::new(false),
        }
    }
}

impl Role for ClientRole {
    type Core = ClientCell;
    const WAKE_ON_EVERY_INPUT: bool = true;

    fn publish(&self, output: ClientOutput) -> Published {
        match output {
            ClientOutput::State { conn_id, state, at } => {
                self.events.emit(conn_id, *self.server.lock(), state, at)
            }
            ClientOutput::ConnectResult(result) => {
                if let Some(tx) = self.connected.lock().take() {
                    let _ = tx.send(result.map_err(Error::from));
                }
            }
            ClientOutput::Dialing(addr) => *self.server.lock() = addr,
            ClientOutput::Data(payload) => {
                let _ = self.inbox.tx.send(Item::Data(payload));
            }
            ClientOutput::Lost(id) => {
                let _ = self.inbox.tx.send(Item::Lost(id));
            }
            ClientOutput::Reconnected { old, new } => {
                let _ = self.inbox.tx.send(Item::Reconnected { old, new });
            }
            ClientOutput::Withholding(withholding) => {
                self.withholding.store(withholding, Ordering::Relaxed)
            }
            ClientOutput::Drained => return Published::Drained,
        }
        Published::Nothing
    }

    fn close_result(&self, core: &ClientCell) -> Result<(), Error> {
        core.peek(ClientCore::close_result).map_err(Error::from)
    }

    fn shut(&self) {
        self.inbox.shut();
        // A connect still waiting learns that the client is gone.
        self.connected.lock().take();
    }

    fn end(&self) {
        self.events.end();
    }
}

/// The server's application side: where the core's outputs go.
pub(crate) struct ServerRole {
    pub(crate) inbox: Inbox<ServerEvent>,
    pub(crate) events: Subscribers,
    /// Lock `discarding`.
    ///
    /// Connections the core said to discard ([`ServerOutput::Discard`],
    /// after `close_conn`) whose `Closed` event has not been read yet:
    /// their messages already in the inbox are skipped. Counted apart, as
    /// `withholding` is, so that a read costs one atomic load when there are none.
    discarding: Mutex<HashSet<ConnId>>,
    discarding_count: AtomicUsize,
    /// Lock `withholding`.
    ///
    /// Connections withholding Data for lack of room ([`ServerOutput::Withholding`]):
    /// a read from one of them tells the core at once, since its peer
    /// waits for the acknowledgements that follow. Counted apart so that
    /// the common case (none) costs a read one atomic load.
    withholding: Mutex<HashSet<ConnId>>,
    holding_count: AtomicUsize,
    /// For a [`Listener`](crate::Listener): each connection's events go to
    /// its own handle.
    pub(crate) router: Option<Router>,
}

impl ServerRole {
    /// A role for a server, or for a listener where `router` is given.
    pub(crate) fn new(router: Option<Router>) -> ServerRole {
        ServerRole {
            inbox: Inbox::new(),
            events: Subscribers::default(),
            discarding: Mutex::new(HashSet::new()),
            discarding_count: AtomicUsize::new(0),
            withholding: Mutex::new(HashSet::new()),
            holding_count: AtomicUsize::new(0),
            router,
        }
    }

    /// Whether connection `id`'s messages still in the inbox are skipped
    /// (it was discarded and its `Closed` event is not read yet).
    pub(crate) fn is_discarding(&self, id: ConnId) -> bool {
        self.discarding_count.load(Ordering::Relaxed) > 0 && self.discarding.lock().contains(&id)
    }

    /// Connection `id`'s `Closed` event was read: nothing of it is left to skip.
    pub(crate) fn closed_read(&self, id: ConnId) {
        if self.discarding_count.load(Ordering::Relaxed) > 0 {
            let mut set = self.discarding.lock();
            set.remove(&id);
            self.discarding_count.store(set.len(), Ordering::Relaxed);
        }
    }

    /// Whether connection `id` holds Data for lack of room in its inbox.
    pub(crate) fn is_withholding(&self, id: ConnId) -> bool {
        self.holding_count.load(Ordering::Relaxed) > 0 && self.withholding.lock().contains(&id)
    }
}

impl Role for ServerRole {
    type Core = ServerCore;
    const WAKE_ON_EVERY_INPUT: bool = false;

    fn publish(&self, output: ServerOutput) -> Published {
        match output {
            ServerOutput::State {
                conn_id,
                peer,
                state,
                at,
            } => {
                self.events.emit(conn_id, peer, state, at);
                // A writer waiting for room on a connection that ends fails.
                if let Some(id) = conn_id {
                    return Published::Wake(id.into());
                }
            }
            ServerOutput::Room { id } => return Published::Wake(id.into()),
            ServerOutput::App(event) => match &self.router {
                Some(router) => router.route(event),
                None => {
                    let _ = self.inbox.tx.send(event);
                }
            },
            ServerOutput::Withholding { id, withholding } => {
                let mut set = self.withholding.lock();
                if withholding {
                    set.insert(id);
                } else {
                    set.remove(&id);
                }
                self.holding_count.store(set.len(), Ordering::Relaxed);
            }
            ServerOutput::Discard { id } => {
                // A listener routes each connection's events to its own
                // handle, which the router ends at once.
                if self.router.is_none() {
                    let mut set = self.discarding.lock();
                    set.insert(id);
                    self.discarding_count.store(set.len(), Ordering::Relaxed);
                }
            }
            ServerOutput::Drained => return Published::Drained,
        }
        Published::Nothing
    }

    fn close_result(&self, core: &ServerCore) -> Result<(), Error> {
        let mut lost = core.lost_during_close();
        if lost.is_empty() {
            Ok(())
        } else {
            lost.sort();
            Err(Error::LostDuringClose(lost))
        }
    }

    fn shut(&self) {
        self.inbox.shut();
        if let Some(router) = &self.router {
            router.shut();
        }
    }

    fn end(&self) {
        self.events.end();
    }
}
