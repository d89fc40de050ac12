//! The iterator of [`Client::messages`](crate::Client::messages) and
//! [`Connection::messages`](crate::Connection::messages).

use std::fmt;

use crate::Error;

/// The messages of one connection, in order, as `read` returns them: each
/// is `Ok(payload)`; the iterator ends (`None`) once the connection was
/// closed from this side ([`Error::Closed`], [`Error::ConnectionClosed`]),
/// and after yielding the error that ended it otherwise (the peer lost,
/// the instance failed). [`Error::Reconnected`], which marks a gap rather
/// than an end, is yielded and the messages go on.
///
/// # Examples
///
/// ```
/// use liveseq::{Client, Listener, Params};
///
/// let params = Params { epoch_millis: 50, ..Params::default() };
/// let listener = Listener::bind("127.0.0.1:0", params).unwrap();
/// let client = Client::connect(listener.local_addr().unwrap(), params).unwrap();
/// let conn = listener.accept().unwrap();
/// for word in ["one", "two", "three"] {
///     client.write(word.as_bytes()).unwrap();
/// }
/// client.close().unwrap();
/// let got: Vec<Vec<u8>> = conn.messages().take(3).collect::<Result<_, _>>().unwrap();
/// assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
/// // The client is gone: after its last message, its loss, then the end.
/// assert!(matches!(conn.messages().next(), Some(Err(liveseq::Error::ConnectionLost(_)))));
/// ```
pub struct Messages<'a> {
    read: Box<dyn FnMut() -> Result<Vec<u8>, Error> + Send + 'a>,
    done: bool,
}

impl<'a> Messages<'a> {
    pub(crate) fn new(read: impl FnMut() -> Result<Vec<u8>, Error> + Send + 'a) -> Messages<'a> {
        Messages {
            read: Box::new(read),
            done: false,
        }
    }
}

impl Iterator for Messages<'_> {
    type Item = Result<Vec<u8>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match (self.read)() {
            Ok(payload) => Some(Ok(payload)),
            Err(err @ Error::Reconnected { .. }) => Some(Err(err)),
            Err(Error::Closed | Error::ConnectionClosed(_)) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

impl fmt::Debug for Messages<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Messages")
            .field("done", &self.done)
            .finish()
    }
}
