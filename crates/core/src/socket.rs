//! Creating socket pairs and setting descriptor flags, one small `cfg` per platform.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{AddressFamily, SockFlag, SockType};

use crate::error::{Error, Result};

/// The kind of socket pair: a byte stream, or one that keeps record boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// SOCK_STREAM: reliable, ordered bytes. Messages need framing (see [`crate::frame`]).
    Stream,
    /// SOCK_SEQPACKET: reliable, ordered records. Linux and FreeBSD only.
    Seqpacket,
    /// SOCK_DGRAM: records; on a socketpair they are reliable and ordered too.
    Dgram,
}

impl SocketKind {
    /// Parses the names the JS API uses: `"stream"`, `"seqpacket"`, `"dgram"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "stream" => Ok(SocketKind::Stream),
            "seqpacket" => Ok(SocketKind::Seqpacket),
            "dgram" => Ok(SocketKind::Dgram),
            other => Err(Error::InvalidArgument(format!(
                "unknown socket type {other:?}: use \"stream\", \"seqpacket\" or \"dgram\""
            ))),
        }
    }

    /// Whether this kind keeps record boundaries (one send is one receive).
    pub fn is_record(self) -> bool {
        !matches!(self, SocketKind::Stream)
    }

    fn sock_type(self) -> Result<SockType> {
        match self {
            SocketKind::Stream => Ok(SockType::Stream),
            SocketKind::Dgram => Ok(SockType::Datagram),
            SocketKind::Seqpacket => seqpacket_type(),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn seqpacket_type() -> Result<SockType> {
    Ok(SockType::SeqPacket)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn seqpacket_type() -> Result<SockType> {
    Err(Error::Unsupported(
        "seqpacket socket pairs are not supported on this system (macOS has no AF_UNIX \
         SOCK_SEQPACKET); use \"stream\", which keeps message boundaries through framing"
            .into(),
    ))
}

/// The type of an open socket (SO_TYPE), e.g. one adopted from a parent process.
pub fn socket_kind(fd: BorrowedFd<'_>) -> Result<SocketKind> {
    use nix::sys::socket::{getsockopt, sockopt};
    match getsockopt(&fd, sockopt::SockType).map_err(|e| Error::os("getsockopt(SO_TYPE)", e))? {
        SockType::Stream => Ok(SocketKind::Stream),
        SockType::Datagram => Ok(SocketKind::Dgram),
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        SockType::SeqPacket => Ok(SocketKind::Seqpacket),
        other => Err(Error::InvalidArgument(format!(
            "the descriptor is a socket of unsupported type {other:?}"
        ))),
    }
}

/// getsockname(2) or getpeername(2): the address family of this end or of the peer.
fn address_family(
    fd: BorrowedFd<'_>,
    call: unsafe extern "C" fn(
        libc::c_int,
        *mut libc::sockaddr,
        *mut libc::socklen_t,
    ) -> libc::c_int,
) -> std::result::Result<libc::sa_family_t, nix::errno::Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr and len are live, and len states addr's size: the kernel writes at
    // most that much.
    let rc = unsafe {
        call(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(addr.ss_family)
    } else {
        Err(nix::errno::Errno::last())
    }
}

/// Checks that `fd` is a Unix-domain socket (AF_UNIX), the only kind that carries
/// descriptors: a TCP socket would take a channel's frames and silently drop every
/// descriptor sent with them. The address family is read with getsockname(2), which
/// reports it on every platform (SO_DOMAIN is Linux and FreeBSD only).
pub fn check_unix_domain(fd: BorrowedFd<'_>) -> Result<()> {
    let family = address_family(fd, libc::getsockname).map_err(|e| Error::os("getsockname", e))?;
    if i32::from(family) != libc::AF_UNIX {
        return Err(Error::InvalidArgument(format!(
            "the descriptor is a socket of address family {family}, not a Unix-domain socket \
             (AF_UNIX): only Unix-domain sockets carry descriptors"
        )));
    }
    Ok(())
}

/// Checks that `fd` is connected to a peer (getpeername(2)): a listening or unconnected
/// socket cannot carry a channel (and a listening one usually belongs to a server).
pub fn check_connected(fd: BorrowedFd<'_>) -> Result<()> {
    match address_family(fd, libc::getpeername) {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::ENOTCONN) => Err(Error::InvalidArgument(
            "the socket is not connected (a listening socket?): a channel needs one end of \
             a connected pair"
                .into(),
        )),
        Err(e) => Err(Error::os("getpeername", e)),
    }
}

/// Whether a receive of `bytes` bytes and `fds` descriptors from a socket of this kind
/// is the end of the stream: 0 bytes from a stream socket; never on a datagram socket,
/// where an empty record is a message; on a seqpacket socket only once the peer has shut
/// down (an empty record from a connected peer is a record).
pub fn is_end_of_stream(
    fd: BorrowedFd<'_>,
    kind: SocketKind,
    bytes: usize,
    fds: usize,
) -> Result<bool> {
    if bytes != 0 || fds != 0 {
        return Ok(false);
    }
    match kind {
        SocketKind::Stream => Ok(true),
        SocketKind::Dgram => Ok(false),
        SocketKind::Seqpacket => peer_shut_down(fd),
    }
}

/// Whether the peer has shut down its sending side (POLLRDHUP). A 0-byte read from a
/// seqpacket socket is either end of stream or an empty record; the kernel returns end of
/// stream only once the peer has shut down and nothing is left, so "not shut down" means
/// the 0 bytes were a record.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub fn peer_shut_down(fd: BorrowedFd<'_>) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one live pollfd, and a timeout of 0: poll only reports, never waits.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    if rc < 0 {
        return Err(Error::os("poll", nix::errno::Errno::last()));
    }
    Ok(pfd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0)
}

/// Elsewhere (macOS has no seqpacket sockets) 0 bytes is always end of stream.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub fn peer_shut_down(_fd: BorrowedFd<'_>) -> Result<bool> {
    Ok(true)
}

/// The largest record the kernel accepts on this record socket: a send larger than this
/// is EMSGSIZE. Linux takes up to the send buffer less 32 bytes (`unix_dgram_sendmsg`),
/// the BSDs and macOS up to the send buffer (`sosend`'s atomic check).
pub fn record_limit(fd: BorrowedFd<'_>) -> Result<usize> {
    use nix::sys::socket::{getsockopt, sockopt};
    let sndbuf =
        getsockopt(&fd, sockopt::SndBuf).map_err(|e| Error::os("getsockopt(SO_SNDBUF)", e))?;
    let overhead = if cfg!(any(target_os = "linux", target_os = "android")) {
        32
    } else {
        0
    };
    Ok(sndbuf.saturating_sub(overhead))
}

/// What a descriptor points to (`st_dev`, `st_ino`): equal means the same open socket or
/// file. A channel records its socket's identity so that it notices when its number was
/// closed behind its back and perhaps reused for something else.
pub fn identity(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| Error::os("fstat", e))?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Flags for a new pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairOptions {
    /// Close-on-exec on both ends (default true): children get only what they are given.
    pub cloexec: bool,
    /// Non-blocking on both ends (default false).
    pub nonblock: bool,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            cloexec: true,
            nonblock: false,
        }
    }
}

/// Creates a connected pair of AF_UNIX sockets. See socketpair(2).
///
/// ```
/// use socketpair_core::socket::{socketpair, SocketKind, PairOptions};
/// let (a, b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
/// assert!(socketpair_core::socket::is_cloexec(&a).unwrap());
/// # drop(b);
/// ```
pub fn socketpair(kind: SocketKind, options: PairOptions) -> Result<(OwnedFd, OwnedFd)> {
    let ty = kind.sock_type()?;
    let (a, b) = raw_socketpair(ty, options)?;
    for fd in [&a, &b] {
        prevent_sigpipe(fd.as_fd())?;
    }
    Ok((a, b))
}

/// Where the type flags exist, the kernel sets them atomically with the pair.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn raw_socketpair(ty: SockType, options: PairOptions) -> Result<(OwnedFd, OwnedFd)> {
    let mut flags = SockFlag::empty();
    if options.cloexec {
        flags |= SockFlag::SOCK_CLOEXEC;
    }
    if options.nonblock {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    nix::sys::socket::socketpair(AddressFamily::Unix, ty, None, flags)
        .map_err(|e| Error::os("socketpair", e))
}

/// macOS and others lack SOCK_CLOEXEC/SOCK_NONBLOCK: set them with fcntl right away.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn raw_socketpair(ty: SockType, options: PairOptions) -> Result<(OwnedFd, OwnedFd)> {
    let (a, b) = nix::sys::socket::socketpair(AddressFamily::Unix, ty, None, SockFlag::empty())
        .map_err(|e| Error::os("socketpair", e))?;
    for fd in [&a, &b] {
        set_cloexec(fd.as_fd(), options.cloexec)?;
        set_nonblocking(fd.as_fd(), options.nonblock)?;
    }
    Ok((a, b))
}

/// SO_NOSIGPIPE: where MSG_NOSIGNAL does not exist, a closed peer must still give EPIPE
/// and never a SIGPIPE.
#[cfg(any(target_os = "macos", target_os = "ios"))]
pub fn prevent_sigpipe(fd: BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and the length passed is its size; the kernel only
    // reads it. An invalid fd is reported as EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::os(
            "setsockopt(SO_NOSIGPIPE)",
            nix::errno::Errno::last(),
        ))
    }
}

/// Elsewhere every send passes MSG_NOSIGNAL, so there is nothing to set.
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
pub fn prevent_sigpipe(_fd: BorrowedFd<'_>) -> Result<()> {
    Ok(())
}

/// Raises SO_SNDBUF and SO_RCVBUF to at least `bytes`, never lowers them. Best effort: the
/// OS caps the value (Linux: net.core.wmem_max / rmem_max; FreeBSD: kern.ipc.maxsockbuf)
/// and a refusal changes only speed, so errors are ignored.
pub fn raise_buffers(fd: BorrowedFd<'_>, bytes: usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    // Linux reports twice what was set (bookkeeping overhead), so compare against that.
    let reported = if cfg!(any(target_os = "linux", target_os = "android")) {
        bytes.saturating_mul(2)
    } else {
        bytes
    };
    if getsockopt(&fd, sockopt::SndBuf).is_ok_and(|now| now < reported) {
        let _ = setsockopt(&fd, sockopt::SndBuf, &bytes);
    }
    if getsockopt(&fd, sockopt::RcvBuf).is_ok_and(|now| now < reported) {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &bytes);
    }
}

/// Sets or clears FD_CLOEXEC. See fcntl(2).
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(|e| Error::os("fcntl(F_GETFD)", e))?;
    let mut flags = FdFlag::from_bits_truncate(flags);
    flags.set(FdFlag::FD_CLOEXEC, on);
    fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(|e| Error::os("fcntl(F_SETFD)", e))?;
    Ok(())
}

/// Whether FD_CLOEXEC is set.
pub fn is_cloexec<Fd: AsFd>(fd: &Fd) -> Result<bool> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFD).map_err(|e| Error::os("fcntl(F_GETFD)", e))?;
    Ok(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
}

/// Sets or clears O_NONBLOCK. See fcntl(2).
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::os("fcntl(F_GETFL)", e))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::os("fcntl(F_SETFL)", e))?;
    Ok(())
}

/// Whether O_NONBLOCK is set.
pub fn is_nonblocking<Fd: AsFd>(fd: &Fd) -> Result<bool> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(|e| Error::os("fcntl(F_GETFL)", e))?;
    Ok(OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_cloexec_by_default() {
        for kind in crate::testutil::kinds() {
            let (a, b) = socketpair(kind, PairOptions::default()).unwrap();
            assert!(
                is_cloexec(&a).unwrap() && is_cloexec(&b).unwrap(),
                "{kind:?}"
            );
            assert!(!is_nonblocking(&a).unwrap() && !is_nonblocking(&b).unwrap());
        }
    }

    #[test]
    fn flags_can_be_chosen() {
        let opts = PairOptions {
            cloexec: false,
            nonblock: true,
        };
        let (a, b) = socketpair(SocketKind::Stream, opts).unwrap();
        assert!(!is_cloexec(&a).unwrap() && !is_cloexec(&b).unwrap());
        assert!(is_nonblocking(&a).unwrap() && is_nonblocking(&b).unwrap());
        set_cloexec(a.as_fd(), true).unwrap();
        set_nonblocking(a.as_fd(), false).unwrap();
        assert!(is_cloexec(&a).unwrap() && !is_nonblocking(&a).unwrap());
    }

    #[test]
    fn kind_is_read_back() {
        for kind in crate::testutil::kinds() {
            let (a, _b) = socketpair(kind, PairOptions::default()).unwrap();
            assert_eq!(socket_kind(a.as_fd()).unwrap(), kind);
        }
    }

    // Platform branches, each tested on its platform (CI runs macOS and FreeBSD).

    #[cfg(target_os = "macos")]
    #[test]
    fn macos_has_no_seqpacket_and_says_so() {
        let err = socketpair(SocketKind::Seqpacket, PairOptions::default()).unwrap_err();
        assert_eq!(err.code(), "ERR_UNSUPPORTED_PLATFORM");
    }

    #[cfg(target_os = "macos")]
    #[test]
    fn macos_pairs_carry_so_nosigpipe() {
        use std::os::fd::AsRawFd;
        for kind in crate::testutil::kinds() {
            let (a, b) = socketpair(kind, PairOptions::default()).unwrap();
            for fd in [&a, &b] {
                let mut on: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: `on` and `len` are live and sized for the option.
                let rc = unsafe {
                    libc::getsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_NOSIGPIPE,
                        (&mut on as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                assert_eq!(rc, 0);
                assert_ne!(on, 0, "{kind:?}");
            }
        }
    }

    #[cfg(target_os = "freebsd")]
    #[test]
    fn freebsd_seqpacket_records_stay_apart() {
        use crate::msg::{recv_with_fds, send_with_fds};
        use std::io::IoSlice;
        let (a, b) = socketpair(SocketKind::Seqpacket, PairOptions::default()).unwrap();
        send_with_fds(a.as_fd(), &[IoSlice::new(b"first")], &[]).unwrap();
        send_with_fds(a.as_fd(), &[IoSlice::new(b"second")], &[]).unwrap();
        let mut buf = [0u8; 64];
        let r = recv_with_fds(b.as_fd(), &mut buf, 0, &mut Vec::new()).unwrap();
        assert_eq!(&buf[..r.bytes], b"first");
        let r = recv_with_fds(b.as_fd(), &mut buf, 0, &mut Vec::new()).unwrap();
        assert_eq!(&buf[..r.bytes], b"second");
    }

    #[test]
    fn unknown_kind_is_an_invalid_argument() {
        let err = SocketKind::parse("raw").unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARG_VALUE");
        assert!(err.to_string().contains("\"raw\""));
    }
}
