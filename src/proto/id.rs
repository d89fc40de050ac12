//! Connection ids, as the server core hands them out and the public API
//! names them (`liveseq::ConnId` is this type).

use std::fmt;

/// Identifies one client connection of a [`Server`](crate::Server).
///
/// # Examples
///
/// ```
/// use liveseq::ConnId;
///
/// let id = ConnId::from(7);
/// assert_eq!(u32::from(id), 7);
/// assert_eq!(id.to_string(), "7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u32);

impl From<u32> for ConnId {
    fn from(id: u32) -> Self {
        ConnId(id)
    }
}

impl From<ConnId> for u32 {
    fn from(id: ConnId) -> Self {
        id.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
