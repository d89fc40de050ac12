//! Batched datagram receive: `recvmmsg(2)` on Linux, one datagram at a time
//! elsewhere; and dissolving a UDP socket's connection.
//!
//! This is the crate's only `unsafe` code, allowed here alone because it is
//! measured to pay: one system call wakes the receive thread for a whole
//! burst of datagrams, which is what lets a burst of in-order Data be
//! acknowledged with one CAck. Neither std nor socket2 can disconnect a UDP
//! socket (`connect` to `AF_UNSPEC`), which a client needs to move from one
//! server address to another. Every `unsafe` block states why it is sound.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Dissolves `socket`'s connection, so it can be connected elsewhere. A
/// connected UDP socket bound to the unspecified address takes the source
/// address of its route as its own (`::1` for `[::1]:port`, say) and keeps
/// it when connected again, which would leave it unable to reach an address
/// of another family or route; disconnecting gives the unspecified address
/// back. Does nothing where `AF_UNSPEC` has no such meaning (non-Unix).
#[allow(unsafe_code)]
pub(crate) fn disconnect(socket: &UdpSocket) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: all-zero bytes are a valid `sockaddr` (family AF_UNSPEC,
        // which is 0), passed with its true size; the kernel only reads it.
        let addr: libc::sockaddr = unsafe { std::mem::zeroed() };
        let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
        // SAFETY: a valid descriptor owned by `socket`, and a valid address.
        let rc = unsafe { libc::connect(socket.as_raw_fd(), &addr, len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(unix))]
    let _ = socket;
    Ok(())
}

/// Receive buffers for up to `count` datagrams of up to `size` bytes each.
pub(crate) struct RecvBatch {
    /// One buffer per datagram slot.
    bufs: Vec<Vec<u8>>,
    /// Slot, length and sender of each datagram of the last batch.
    got: Vec<(usize, usize, SocketAddr)>,
    #[cfg(target_os = "linux")]
    linux: linux::Headers,
}

impl RecvBatch {
    pub(crate) fn new(count: usize, size: usize) -> RecvBatch {
        let count = count.max(1);
        RecvBatch {
            bufs: (0..count).map(|_| vec![0u8; size]).collect(),
            got: Vec::with_capacity(count),
            #[cfg(target_os = "linux")]
            linux: linux::Headers::new(count),
        }
    }

    /// Blocks until at least one datagram arrives, then takes every datagram
    /// already queued, up to the batch size. Returns how many were received.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        #[cfg(target_os = "linux")]
        {
            linux::recv(socket, &mut self.bufs, &mut self.linux, &mut self.got)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let (len, from) = socket.recv_from(&mut self.bufs[0])?;
            self.got.push((0, len, from));
        }
        Ok(self.got.len())
    }

    /// Datagram `i` of the last batch and its sender.
    pub(crate) fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let (slot, len, from) = self.got[i];
        (&self.bufs[slot][..len], from)
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    /// `recvmmsg(2)`: return as soon as one datagram is there, with whatever
    /// else is already queued. Fixed by the kernel ABI; libc does not export it.
    const MSG_WAITFORONE: libc::c_int = 0x10000;

    /// The kernel-facing headers, kept between calls to avoid reallocating.
    /// Their pointers are refreshed before every call, so moving the owner
    /// (and its buffers) between calls is harmless.
    pub(super) struct Headers {
        addrs: Vec<libc::sockaddr_storage>,
        iovecs: Vec<libc::iovec>,
        msgs: Vec<libc::mmsghdr>,
    }

    impl Headers {
        pub(super) fn new(count: usize) -> Headers {
            // SAFETY: these are plain C structs for which all-zero bytes is a
            // valid (empty) value.
            let zeroed_storage = || unsafe { zeroed::<libc::sockaddr_storage>() };
            let zeroed_msg = || unsafe { zeroed::<libc::mmsghdr>() };
            Headers {
                addrs: (0..count).map(|_| zeroed_storage()).collect(),
                iovecs: (0..count)
                    .map(|_| libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    })
                    .collect(),
                msgs: (0..count).map(|_| zeroed_msg()).collect(),
            }
        }
    }

    pub(super) fn recv(
        socket: &UdpSocket,
        bufs: &mut [Vec<u8>],
        h: &mut Headers,
        got: &mut Vec<(usize, usize, SocketAddr)>,
    ) -> io::Result<()> {
        let count = bufs.len();
        let slots = bufs
            .iter_mut()
            .zip(&mut h.iovecs)
            .zip(&mut h.addrs)
            .zip(&mut h.msgs);
        for (((buf, iovec), addr), msg) in slots {
            *iovec = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let hdr = &mut msg.msg_hdr;
            hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = iovec;
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        // SAFETY: `msgs` holds `count` headers, each pointing at a live
        // sockaddr_storage with its true size and at one iovec that covers
        // exactly one live buffer; all of them are borrowed mutably for the
        // duration of the call and not touched by anything else meanwhile.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                h.msgs.as_mut_ptr(),
                count as libc::c_uint,
                MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = h
            .msgs
            .iter()
            .zip(&h.addrs)
            .zip(bufs.iter())
            .take(n as usize);
        for (i, ((msg, addr), buf)) in received.enumerate() {
            // A datagram longer than its buffer was cut (MSG_TRUNC): the
            // buffers are one byte longer than the largest datagram, so this
            // cannot happen, and would only yield a malformed message if it did.
            let len = (msg.msg_len as usize).min(buf.len());
            if let Some(from) = to_socket_addr(addr, msg.msg_hdr.msg_namelen) {
                got.push((i, len, from));
            }
        }
        Ok(())
    }

    fn to_socket_addr(
        storage: &libc::sockaddr_storage,
        len: libc::socklen_t,
    ) -> Option<SocketAddr> {
        match storage.ss_family as libc::c_int {
            libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote an AF_INET address of this size;
                // sockaddr_storage is large and aligned enough for any sockaddr.
                let a = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for AF_INET6.
                let a = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}
