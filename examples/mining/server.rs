//! The server's I/O: liveseq events in, scheduler decisions out.
//!
//! One thread does everything: it blocks in `next_event`, turns the event
//! into a scheduler [`Input`], and carries out the [`Action`]s. It writes
//! with `try_write`, which never waits, so one slow peer cannot hold up the
//! others, and the scheduler needs no locks.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use liveseq::{ConnId, Error, Server, ServerEvent};

use super::message::Message;
use super::scheduler::{Action, Input, Note, Scheduler};

/// Serves miners and clients until `server` is closed (from another thread),
/// telling `note` about every scheduling decision.
pub fn serve(server: &Server, chunk_size: u64, mut note: impl FnMut(&Note)) {
    let mut scheduler = Scheduler::new(chunk_size);
    // next_event fails only once the server is closed: then we are done.
    while let Ok(event) = server.next_event() {
        let Some(input) = to_input(server, event) else {
            continue;
        };
        let actions = scheduler.handle(input);
        if carry_out(server, &mut scheduler, actions, &mut note).is_break() {
            return;
        }
    }
}

/// What an event means to the scheduler, if anything.
fn to_input(server: &Server, event: ServerEvent) -> Option<Input> {
    match event {
        ServerEvent::Connected { id, peer } => {
            log::debug!("connection {id} from {peer}");
            None
        }
        ServerEvent::Message { id, payload } => Some(
            decode(server, id, &payload).unwrap_or_else(|why| Input::Invalid { conn: id, why }),
        ),
        ServerEvent::Lost { id } => {
            log::debug!("connection {id} lost");
            Some(Input::Gone(id))
        }
        ServerEvent::Closed { id } => Some(Input::Gone(id)),
        other => {
            log::debug!("ignoring {other:?}");
            None
        }
    }
}

/// Decodes one message into the scheduler's terms, or says why it is bad.
fn decode(server: &Server, id: ConnId, payload: &[u8]) -> Result<Input, String> {
    match Message::decode(payload).map_err(|err| err.to_string())? {
        Message::Join => Ok(Input::Join(id)),
        Message::Request { data, lower, upper } => {
            // The chunks we pass on carry the same data with other bounds;
            // make sure the widest of them still fits in one LSP message.
            let widest = Message::Request {
                data: data.clone(),
                lower: u64::MAX,
                upper: u64::MAX,
            };
            if widest.encode().len() > server.max_payload() {
                return Err(format!("data of {} bytes is too long", data.len()));
            }
            Ok(Input::Request {
                client: id,
                data,
                lower,
                upper,
            })
        }
        Message::Result { hash, nonce } => Ok(Input::Result {
            miner: id,
            hash,
            nonce,
        }),
    }
}

/// Does what the scheduler decided; breaks once the server is closed.
fn carry_out(
    server: &Server,
    scheduler: &mut Scheduler,
    actions: Vec<Action>,
    note: &mut impl FnMut(&Note),
) -> ControlFlow<()> {
    let mut actions = VecDeque::from(actions);
    while let Some(action) = actions.pop_front() {
        match action {
            // try_write: one thread serves everyone, so it must never wait
            // for one peer's acknowledgements.
            Action::Send { to, msg } => match server.try_write(to, &msg.encode()) {
                Ok(()) => {}
                Err(Error::Closed) => return ControlFlow::Break(()),
                // A miner holds one chunk and a client waits for its answers,
                // so only a peer that stopped acknowledging lets a thousand
                // messages pile up. It goes, like any other rule breaker.
                Err(Error::BufferFull) => {
                    let why = "does not acknowledge what it is sent".to_string();
                    actions.extend(scheduler.handle(Input::Invalid { conn: to, why }));
                }
                // The peer is already gone: its Lost or Closed event is on its
                // way and will tell the scheduler (a miner's chunk is requeued).
                Err(err) => log::debug!("{msg} to {to} not sent: {err}"),
            },
            Action::Close { conn } => {
                // Fails only if it is gone already, which is what we want.
                let _ = server.close_conn(conn);
            }
            Action::Note(n) => {
                match &n {
                    Note::Rejected { conn, why } => log::warn!("closing connection {conn}: {why}"),
                    _ => log::debug!("{n:?}"),
                }
                note(&n);
            }
        }
    }
    ControlFlow::Continue(())
}
