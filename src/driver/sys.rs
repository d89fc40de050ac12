//! Batched datagram receive: `recvmmsg(2)` on Linux, one datagram at a time
//! elsewhere; dissolving a UDP socket's connection; and, on a socket bound
//! to a wildcard address, learning where each datagram was sent and
//! replying from there.
//!
//! This is the crate's only `unsafe` code, allowed here alone because it is
//! measured to pay: one system call wakes the receive thread for a whole
//! burst of datagrams, which is what lets a burst of in-order Data be
//! acknowledged with one CAck. Neither std nor socket2 can disconnect a UDP
//! socket (`connect` to `AF_UNSPEC`), which a client needs to move from one
//! server address to another, nor pass the `IP_PKTINFO` / `IPV6_PKTINFO`
//! control messages a wildcard-bound server needs to answer from the
//! address a client sent to (see [`recv_destinations`]). Every `unsafe`
//! block states why it is sound.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Has the kernel report each datagram's destination address on `socket`
/// (`IP_PKTINFO` for IPv4, `IPV6_RECVPKTINFO` for IPv6, which covers the
/// IPv4-mapped addresses of a dual-stack socket too), so that a server
/// bound to `0.0.0.0` or `::` can answer from the address a client sent to
/// ([`send_from`]): the kernel would otherwise pick the source by route,
/// and a client's connected socket drops replies from any other address.
/// Returns whether it is on: only on Linux; elsewhere nothing changes and
/// every datagram's destination is unknown (`None`).
#[allow(unsafe_code)]
pub(crate) fn recv_destinations(socket: &UdpSocket) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (level, name) = pktinfo_option(socket.local_addr()?);
        let on: libc::c_int = 1;
        // SAFETY: a valid descriptor owned by `socket`, and a pointer to a
        // live c_int with its true size, which the kernel only reads.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Ok(false)
    }
}

/// The socket option that has the kernel report destinations, for a
/// socket bound to `local`'s family: `(level, name)`.
#[cfg(target_os = "linux")]
fn pktinfo_option(local: SocketAddr) -> (libc::c_int, libc::c_int) {
    match local {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    }
}

/// Whether `socket` reports each datagram's destination address (see
/// [`recv_destinations`]); always false off Linux.
#[allow(unsafe_code)]
pub(crate) fn receives_destinations(socket: &UdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(local) = socket.local_addr() else {
            return false;
        };
        let (level, name) = pktinfo_option(local);
        let mut on: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid descriptor owned by `socket`; the kernel writes at
        // most `len` bytes into the live c_int `on` and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&mut on as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        rc == 0 && on != 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        false
    }
}

/// Sends `bytes` to `to` from the local address `from` (`sendmsg(2)` with
/// an `IP_PKTINFO` or `IPV6_PKTINFO` control message), on a socket that is
/// not connected; `v6`: the socket is an IPv6 one. `from` is an address a
/// datagram was received at (see [`recv_destinations`]); on an IPv6
/// socket IPv4 addresses, `to` and `from` alike, travel in their
/// IPv4-mapped form. Off Linux it sends from the socket's own address, as
/// `send_to` does.
pub(crate) fn send_from(
    socket: &UdpSocket,
    v6: bool,
    bytes: &[u8],
    to: SocketAddr,
    from: IpAddr,
    flags: libc::c_int,
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        linux::send_from(socket, v6, bytes, to, from, flags)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (v6, from);
        socket2::SockRef::from(socket).send_to_with_flags(bytes, &to.into(), flags)
    }
}

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
    /// Slot, length, sender and (if the socket reports it) destination
    /// address of each datagram of the last batch.
    got: Vec<(usize, usize, SocketAddr, Option<IpAddr>)>,
    #[cfg(target_os = "linux")]
    linux: linux::Headers,
}

impl RecvBatch {
    /// With `destinations`, each datagram comes with the address it was
    /// sent to, from a control message (the socket must have
    /// [`recv_destinations`] on); without, no control buffer is passed to
    /// the kernel at all.
    pub(crate) fn new(count: usize, size: usize, destinations: bool) -> RecvBatch {
        let count = count.max(1);
        #[cfg(not(target_os = "linux"))]
        let _ = destinations;
        RecvBatch {
            bufs: (0..count).map(|_| vec![0u8; size]).collect(),
            got: Vec::with_capacity(count),
            #[cfg(target_os = "linux")]
            linux: linux::Headers::new(count, destinations),
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
            self.got.push((0, len, from, None));
        }
        Ok(self.got.len())
    }

    /// Datagram `i` of the last batch, its sender and where it was sent
    /// (`None` unless the batch takes destinations).
    pub(crate) fn get(&self, i: usize) -> (&[u8], SocketAddr, Option<IpAddr>) {
        let (slot, len, from, to) = self.got[i];
        (&self.bufs[slot][..len], from, to)
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    /// `recvmmsg(2)`: return as soon as one datagram is there, with whatever
    /// else is already queued. Fixed by the kernel ABI; libc does not export it.
    const MSG_WAITFORONE: libc::c_int = 0x10000;

    /// Room for one control message of either pktinfo kind (`CMSG_SPACE`
    /// of an `in6_pktinfo` is 40 bytes on 64-bit Linux, of an `in_pktinfo`
    /// 32), aligned as a `cmsghdr` must be; with room to spare for one the
    /// kernel adds unasked (it cuts what does not fit, `MSG_CTRUNC`).
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    pub(super) struct Control([u8; 64]);

    /// The kernel-facing headers, kept between calls to avoid reallocating.
    /// Their pointers are refreshed before every call, so moving the owner
    /// (and its buffers) between calls is harmless.
    pub(super) struct Headers {
        addrs: Vec<libc::sockaddr_storage>,
        iovecs: Vec<libc::iovec>,
        msgs: Vec<libc::mmsghdr>,
        /// One control buffer per message if destinations are asked for,
        /// none otherwise.
        controls: Vec<Control>,
    }

    impl Headers {
        pub(super) fn new(count: usize, destinations: bool) -> Headers {
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
                controls: if destinations {
                    vec![Control([0; 64]); count]
                } else {
                    Vec::new()
                },
            }
        }
    }

    pub(super) fn recv(
        socket: &UdpSocket,
        bufs: &mut [Vec<u8>],
        h: &mut Headers,
        got: &mut Vec<(usize, usize, SocketAddr, Option<IpAddr>)>,
    ) -> io::Result<()> {
        let count = bufs.len();
        let destinations = !h.controls.is_empty();
        let slots = bufs
            .iter_mut()
            .zip(&mut h.iovecs)
            .zip(&mut h.addrs)
            .zip(&mut h.msgs);
        for (i, (((buf, iovec), addr), msg)) in slots.enumerate() {
            *iovec = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let hdr = &mut msg.msg_hdr;
            hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = iovec;
            hdr.msg_iovlen = 1;
            match h.controls.get_mut(i) {
                Some(control) => {
                    hdr.msg_control = (control as *mut Control).cast();
                    hdr.msg_controllen = size_of::<Control>();
                }
                None => {
                    hdr.msg_control = std::ptr::null_mut();
                    hdr.msg_controllen = 0;
                }
            }
            hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        // SAFETY: `msgs` holds `count` headers, each pointing at a live
        // sockaddr_storage with its true size, at one iovec that covers
        // exactly one live buffer, and at either no control buffer or one
        // live `Control` with its true size; all of them are borrowed
        // mutably for the duration of the call and not touched by anything
        // else meanwhile.
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
                let to = if destinations {
                    destination(&msg.msg_hdr)
                } else {
                    None
                };
                got.push((i, len, from, to));
            }
        }
        Ok(())
    }

    /// The destination address in the pktinfo control message of a header
    /// `recvmmsg` filled in, if there is one and a reply can leave from it
    /// (not a multicast or broadcast address).
    fn destination(hdr: &libc::msghdr) -> Option<IpAddr> {
        // SAFETY: `hdr` is a header the kernel filled in: its control
        // pointer and (updated) length describe a live buffer of ours, which
        // these macros only walk within those bounds.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        while !cmsg.is_null() {
            // SAFETY: non-null pointers from CMSG_FIRSTHDR / CMSG_NXTHDR
            // point at a complete cmsghdr inside the buffer; it may be read
            // unaligned for all we rely on.
            let c = unsafe { std::ptr::read_unaligned(cmsg) };
            // SAFETY: the data of a control message starts inside its buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            let data_len = (c.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
            match (c.cmsg_level, c.cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if data_len >= size_of::<libc::in_pktinfo>() =>
                {
                    // SAFETY: the kernel wrote a whole in_pktinfo there (its
                    // length says so); read unaligned, as CMSG_DATA promises
                    // no alignment for it.
                    let info = unsafe { std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>()) };
                    // The local address a reply leaves from: the destination
                    // itself for unicast, the interface's for broadcast.
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                    return (!ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast())
                        .then_some(IpAddr::V4(ip));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if data_len >= size_of::<libc::in6_pktinfo>() =>
                {
                    // SAFETY: as above, for an in6_pktinfo.
                    let info =
                        unsafe { std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>()) };
                    let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    let multicast = match ip.to_ipv4_mapped() {
                        Some(v4) => v4.is_multicast() || v4.is_broadcast(),
                        None => ip.is_multicast(),
                    };
                    return (!ip.is_unspecified() && !multicast).then_some(IpAddr::V6(ip));
                }
                _ => {}
            }
            // SAFETY: `cmsg` is a control message of `hdr`'s buffer.
            cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
        }
        None
    }

    /// See [`super::send_from`].
    pub(super) fn send_from(
        socket: &UdpSocket,
        v6: bool,
        bytes: &[u8],
        to: SocketAddr,
        from: IpAddr,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        // On an IPv6 socket everything is IPv6 (IPv4 as IPv4-mapped); on an
        // IPv4 one, an IPv4-mapped address is the IPv4 address it stands for.
        let (to, from) = if v6 {
            let to = match to {
                SocketAddr::V4(a) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
                a => a,
            };
            let from = match from {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            (to, IpAddr::V6(from))
        } else {
            let to = SocketAddr::new(to.ip().to_canonical(), to.port());
            (to, from.to_canonical())
        };
        let to = socket2::SockAddr::from(to);
        let mut control = Control([0; 64]);
        // SAFETY: all-zero bytes are a valid (empty) msghdr.
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        let mut iovec = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        hdr.msg_name = to.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = to.len();
        hdr.msg_iov = &mut iovec;
        hdr.msg_iovlen = 1;
        hdr.msg_control = (&mut control as *mut Control).cast();
        let (level, kind, data_len) = match from {
            IpAddr::V4(_) => (
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                size_of::<libc::in_pktinfo>(),
            ),
            IpAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                size_of::<libc::in6_pktinfo>(),
            ),
        };
        // SAFETY: CMSG_SPACE only computes a size.
        hdr.msg_controllen = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
        debug_assert!(hdr.msg_controllen <= size_of::<Control>());
        // SAFETY: the header's control buffer is `control`, live and at
        // least `msg_controllen` bytes long, so its first header is there.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
        if cmsg.is_null() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: `cmsg` points at the start of `control`, aligned for a
        // cmsghdr and with room for it and `data_len` bytes of data
        // (CMSG_SPACE above); the data is written unaligned.
        unsafe {
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as usize;
            let data = libc::CMSG_DATA(cmsg);
            match from {
                IpAddr::V4(ip) => {
                    let mut info: libc::in_pktinfo = zeroed();
                    info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
                    std::ptr::write_unaligned(data.cast::<libc::in_pktinfo>(), info);
                }
                IpAddr::V6(ip) => {
                    let mut info: libc::in6_pktinfo = zeroed();
                    info.ipi6_addr.s6_addr = ip.octets();
                    std::ptr::write_unaligned(data.cast::<libc::in6_pktinfo>(), info);
                }
            }
        }
        // SAFETY: a valid descriptor owned by `socket`; `hdr` points at a
        // live address of its true length, one iovec over `bytes` (which the
        // kernel only reads, whatever the pointer's mutability) and a live
        // control buffer holding one complete control message.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &hdr, flags) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
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
