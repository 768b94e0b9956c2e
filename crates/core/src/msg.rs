//! sendmsg/recvmsg with SCM_RIGHTS: descriptors ride on the first byte sent, and every
//! descriptor received is owned (`OwnedFd`) and close-on-exec before anyone sees it.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags};

use crate::error::{Error, Result};

/// The most descriptors one message may carry.
///
/// This is Linux's `SCM_MAX_FD` (253): one more and sendmsg(2) fails with EINVAL. We
/// use the same cap on every platform so that a program that works on one works on all.
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Sends `bufs` as one sendmsg(2), with `fds` attached to its first byte.
///
/// Returns the number of bytes the kernel took, which on a stream socket may be fewer
/// than offered: the caller sends the rest *without* the descriptors, which have
/// already gone. Retries on EINTR. A closed peer is `EPIPE`, never SIGPIPE.
///
/// Descriptors need at least one byte to ride on: an empty send with descriptors is an
/// invalid argument, because on a stream socket the kernel would drop them.
pub fn send_with_fds(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> Result<usize> {
    send_impl(fd, bufs, fds, MsgFlags::empty())
}

/// [`send_with_fds`] that never blocks, whatever the socket's own mode (MSG_DONTWAIT):
/// "the socket is full" is EAGAIN. A channel's socket is shared with whoever else holds
/// its open file description, who may clear O_NONBLOCK at any time; this is how a
/// channel never blocks the event loop anyway.
pub fn send_nonblocking(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> Result<usize> {
    send_impl(fd, bufs, fds, MsgFlags::MSG_DONTWAIT)
}

fn send_impl(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    extra: MsgFlags,
) -> Result<usize> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(Error::TooManyFds {
            count: fds.len(),
            max: MAX_FDS_PER_MESSAGE,
        });
    }
    if total == 0 && !fds.is_empty() {
        return Err(Error::InvalidArgument(
            "descriptors need at least one byte of data to ride on; send a non-empty message"
                .into(),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let flags = send_flags(fd) | extra;
    loop {
        match nix::sys::socket::sendmsg::<()>(fd.as_raw_fd(), bufs, cmsgs, flags, None) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EMSGSIZE) => {
                return Err(Error::MessageTooLarge {
                    len: total,
                    max: None,
                })
            }
            Err(e) => return Err(Error::os("sendmsg", e)),
        }
    }
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
fn send_flags(_fd: BorrowedFd<'_>) -> MsgFlags {
    // No MSG_NOSIGNAL here: the sockets carry SO_NOSIGPIPE instead (socket::prevent_sigpipe).
    MsgFlags::empty()
}

#[cfg(target_os = "freebsd")]
fn send_flags(fd: BorrowedFd<'_>) -> MsgFlags {
    // FreeBSD ends a seqpacket record only at MSG_EOR: without it, consecutive sends may
    // be read as one record. (One getsockopt per send, on FreeBSD only.)
    match crate::socket::socket_kind(fd) {
        Ok(crate::socket::SocketKind::Seqpacket) => MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_EOR,
        _ => MsgFlags::MSG_NOSIGNAL,
    }
}

#[cfg(not(any(target_os = "macos", target_os = "ios", target_os = "freebsd")))]
fn send_flags(_fd: BorrowedFd<'_>) -> MsgFlags {
    MsgFlags::MSG_NOSIGNAL
}

/// What one recvmsg(2) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes written into the buffer; 0 on a stream socket means the peer closed.
    pub bytes: usize,
    /// How many descriptors were appended to the caller's vector.
    pub fds: usize,
    /// MSG_TRUNC: a record (dgram/seqpacket) was longer than the buffer; the rest is gone.
    pub truncated: bool,
}

/// Receives into `buf`, appending up to `max_fds` received descriptors to `fds_out`.
///
/// Every descriptor is wrapped in an `OwnedFd` the moment it is parsed and is
/// close-on-exec (MSG_CMSG_CLOEXEC where the kernel has it, fcntl right after receipt
/// elsewhere). If the kernel truncated the control data (MSG_CTRUNC: more descriptors
/// than `max_fds`, or the receiver hit its RLIMIT_NOFILE), the descriptors that did
/// arrive are closed and the call fails with `ERR_FDS_TRUNCATED`; the bytes were
/// consumed. Retries on EINTR.
///
/// Written over `libc` rather than nix so that it can take ownership of whatever the
/// kernel delivered even on the error path.
pub fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    fds_out: &mut Vec<OwnedFd>,
) -> Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    recv_vectored_with_fds(fd, &mut iov, max_fds, fds_out)
}

/// [`recv_with_fds`] that never blocks, whatever the socket's own mode (MSG_DONTWAIT):
/// "nothing yet" is EAGAIN. See [`send_nonblocking`] for why channels need it.
pub fn recv_nonblocking(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    fds_out: &mut Vec<OwnedFd>,
) -> Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`, which we may write.
    unsafe { recv_iovecs(fd, &mut iov, 1, max_fds, fds_out, libc::MSG_DONTWAIT) }
}

/// [`recv_with_fds`] into several buffers (readv-style).
pub fn recv_vectored_with_fds(
    fd: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    max_fds: usize,
    fds_out: &mut Vec<OwnedFd>,
) -> Result<Received> {
    // SAFETY: IoSliceMut is guaranteed ABI-compatible with iovec on Unix, and each one
    // describes memory we may write.
    unsafe {
        recv_iovecs(
            fd,
            bufs.as_mut_ptr().cast(),
            bufs.len(),
            max_fds,
            fds_out,
            0,
        )
    }
}

/// [`recv_with_fds`] into the spare capacity of `vec` (at most `max_bytes` of it): the
/// bytes received are appended without the buffer being initialised first. Used to
/// receive a large payload straight into its own buffer. Never blocks (MSG_DONTWAIT), as
/// [`recv_nonblocking`].
pub fn recv_into_spare(
    fd: BorrowedFd<'_>,
    vec: &mut Vec<u8>,
    max_bytes: usize,
    max_fds: usize,
    fds_out: &mut Vec<OwnedFd>,
) -> Result<Received> {
    let spare = vec.spare_capacity_mut();
    let len = spare.len().min(max_bytes);
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: the iovec covers `len` bytes of the vector's spare capacity, which we may
    // write; the kernel writes at most that many.
    let r = unsafe { recv_iovecs(fd, &mut iov, 1, max_fds, fds_out, libc::MSG_DONTWAIT)? };
    // SAFETY: the kernel initialised r.bytes <= len bytes right after the current length.
    unsafe { vec.set_len(vec.len() + r.bytes) };
    Ok(r)
}

/// # Safety
/// `iov` must point at `iovcnt` iovecs, each describing writable memory.
unsafe fn recv_iovecs(
    fd: BorrowedFd<'_>,
    iov: *mut libc::iovec,
    iovcnt: usize,
    max_fds: usize,
    fds_out: &mut Vec<OwnedFd>,
    extra_flags: libc::c_int,
) -> Result<Received> {
    let max_fds = max_fds.min(MAX_FDS_PER_MESSAGE);
    let mut control = ControlBuffer::for_fds(max_fds);
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = iovcnt as _;
    // Always offer the control buffer: a socket with SO_PASSCRED or SO_PASSPIDFD set (by
    // anyone sharing it) gets control messages even when no descriptors are wanted, and
    // a pidfd that does not fit is lost, not closed.
    msg.msg_control = control.as_mut_ptr();
    msg.msg_controllen = control.len() as _;
    let n = loop {
        // SAFETY: msg points at live buffers (iov and control) whose lengths it states;
        // the kernel writes only within them.
        let rc = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, recv_flags() | extra_flags) };
        if rc >= 0 {
            break rc as usize;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(Error::os("recvmsg", e)),
        }
    };
    let before = fds_out.len();
    // SAFETY: msg was filled by a successful recvmsg: msg_control/msg_controllen describe
    // the control data the kernel wrote into our buffer.
    unsafe { take_rights(&msg, fds_out) };
    let received = fds_out.len() - before;
    if received > max_fds {
        // More than the caller allows (the buffer has room beyond max_fds for other
        // control messages): as if the kernel had truncated them.
        fds_out.truncate(before);
        return Err(Error::FdsTruncated { received });
    }
    for owned in &fds_out[before..] {
        mark_cloexec_after_receipt(owned)?;
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        fds_out.truncate(before); // closes what arrived
        return Err(Error::FdsTruncated { received });
    }
    Ok(Received {
        bytes: n,
        fds: received,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    })
}

/// Parses every SCM_RIGHTS message in `msg`'s control data into `OwnedFd`s, and closes
/// any descriptor that another kind of control message carried (a pidfd from
/// SO_PASSPIDFD): nothing the kernel installed in this process is left without an owner.
///
/// # Safety
/// `msg` must come from a successful recvmsg(2), with `msg_control` pointing at a live
/// buffer of at least `msg_controllen` bytes.
unsafe fn take_rights(msg: &libc::msghdr, out: &mut Vec<OwnedFd>) {
    if msg.msg_control.is_null() {
        return;
    }
    // SAFETY: guaranteed by the caller; CMSG_FIRSTHDR/CMSG_NXTHDR bound every header by
    // msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/NXTHDR return either null or a header inside the buffer.
        let hdr = unsafe { std::ptr::read_unaligned(cmsg) };
        let carries_fds = hdr.cmsg_level == libc::SOL_SOCKET
            && (hdr.cmsg_type == libc::SCM_RIGHTS || is_pidfd_message(hdr.cmsg_type));
        if carries_fds {
            let keep = hdr.cmsg_type == libc::SCM_RIGHTS;
            // SAFETY: CMSG_LEN(0) is a pure computation.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            let data_len = (hdr.cmsg_len as usize).saturating_sub(header_len);
            let count = data_len / std::mem::size_of::<RawFd>();
            // SAFETY: the data of this header lies inside the control buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: i < count, so the read is inside this header's data; the kernel
                // installed each of these descriptors for us, and nobody else owns them.
                let raw = unsafe { std::ptr::read_unaligned(data.add(i)) };
                if raw >= 0 {
                    // SAFETY: see above: a freshly installed descriptor with no owner.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if keep {
                        out.push(owned);
                    } // else: dropped, so closed
                }
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
}

/// SCM_PIDFD (Linux 6.5+, not yet in the libc crate): a pidfd of the sender, delivered
/// when SO_PASSPIDFD is set on the receiving socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_pidfd_message(cmsg_type: libc::c_int) -> bool {
    const SCM_PIDFD: libc::c_int = 0x04;
    cmsg_type == SCM_PIDFD
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn is_pidfd_message(_cmsg_type: libc::c_int) -> bool {
    false
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn recv_flags() -> libc::c_int {
    libc::MSG_CMSG_CLOEXEC
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn recv_flags() -> libc::c_int {
    0
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn mark_cloexec_after_receipt(_fd: &OwnedFd) -> Result<()> {
    Ok(()) // MSG_CMSG_CLOEXEC did it atomically
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn mark_cloexec_after_receipt(fd: &OwnedFd) -> Result<()> {
    use std::os::fd::AsFd;
    crate::socket::set_cloexec(fd.as_fd(), true)
}

/// Room for control messages besides the descriptors: credentials (SO_PASSCRED: a
/// `ucred`), a pidfd (SO_PASSPIDFD) and a security label (SO_PASSSEC), which whoever
/// shares a channel's socket may switch on.
const OTHER_CONTROL_BYTES: usize = 512;

/// A control-message buffer aligned for `cmsghdr`, sized for `max_fds` descriptors and
/// the other control messages a socket may get.
struct ControlBuffer {
    words: Vec<u64>,
    len: usize,
}

impl ControlBuffer {
    fn for_fds(max_fds: usize) -> Self {
        let payload = (max_fds * std::mem::size_of::<RawFd>()) as libc::c_uint;
        // SAFETY: CMSG_SPACE is a pure computation.
        let len = unsafe { libc::CMSG_SPACE(payload) } as usize + OTHER_CONTROL_BYTES;
        ControlBuffer {
            words: vec![0u64; len.div_ceil(8)],
            len,
        }
    }

    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.words.as_mut_ptr().cast()
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::{socketpair, PairOptions, SocketKind};
    use crate::testutil::{fd_inode, open_fd_count, temp_file_with};
    use std::os::fd::AsFd;

    fn pair(kind: SocketKind) -> (OwnedFd, OwnedFd) {
        socketpair(kind, PairOptions::default()).unwrap()
    }

    #[test]
    fn data_and_fds_arrive_together() {
        let base = open_fd_count();
        {
            let (a, b) = pair(SocketKind::Stream);
            let file = temp_file_with(b"hello");
            let n = send_with_fds(a.as_fd(), &[IoSlice::new(b"x")], &[file.as_fd()]).unwrap();
            assert_eq!(n, 1);
            let mut buf = [0u8; 16];
            let mut fds = Vec::new();
            let r = recv_with_fds(b.as_fd(), &mut buf, 8, &mut fds).unwrap();
            assert_eq!((r.bytes, r.fds, r.truncated), (1, 1, false));
            assert_eq!(&buf[..1], b"x");
            assert_eq!(fd_inode(&fds[0]), fd_inode(&file));
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn received_fds_are_cloexec() {
        let (a, b) = pair(SocketKind::Stream);
        let (x, _y) = socketpair(
            SocketKind::Stream,
            PairOptions {
                cloexec: false,
                nonblock: false,
            },
        )
        .unwrap();
        assert!(!crate::socket::is_cloexec(&x).unwrap());
        send_with_fds(a.as_fd(), &[IoSlice::new(b"x")], &[x.as_fd()]).unwrap();
        let mut fds = Vec::new();
        recv_with_fds(b.as_fd(), &mut [0u8; 4], 4, &mut fds).unwrap();
        assert_eq!(fds.len(), 1);
        assert!(crate::socket::is_cloexec(&fds[0]).unwrap());
    }

    #[test]
    fn fd_counts_1_64_and_the_cap() {
        let base = open_fd_count();
        for count in [1usize, 64, MAX_FDS_PER_MESSAGE] {
            let (a, b) = pair(SocketKind::Stream);
            let files: Vec<OwnedFd> = (0..count)
                .map(|i| temp_file_with(format!("{i}").as_bytes()))
                .collect();
            let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
            send_with_fds(a.as_fd(), &[IoSlice::new(b"m")], &borrowed).unwrap();
            let mut fds = Vec::new();
            let r = recv_with_fds(b.as_fd(), &mut [0u8; 4], MAX_FDS_PER_MESSAGE, &mut fds).unwrap();
            assert_eq!(r.fds, count);
            for (sent, got) in files.iter().zip(&fds) {
                assert_eq!(fd_inode(sent), fd_inode(got), "order and identity kept");
            }
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn cap_plus_one_is_a_typed_error_and_sends_nothing() {
        let base = open_fd_count();
        {
            let (a, b) = pair(SocketKind::Stream);
            crate::socket::set_nonblocking(b.as_fd(), true).unwrap();
            let files: Vec<OwnedFd> = (0..=MAX_FDS_PER_MESSAGE)
                .map(|_| temp_file_with(b""))
                .collect();
            let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
            let err = send_with_fds(a.as_fd(), &[IoSlice::new(b"m")], &borrowed).unwrap_err();
            assert_eq!(err.code(), "ERR_TOO_MANY_FDS");
            assert!(err.to_string().contains("254"));
            let mut fds = Vec::new();
            let err = recv_with_fds(b.as_fd(), &mut [0u8; 4], 8, &mut fds).unwrap_err();
            assert_eq!(err.code(), "EAGAIN", "nothing was sent");
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn the_kernel_cap_is_253_on_linux() {
        // Documents where MAX_FDS_PER_MESSAGE comes from: bypass our check and ask the kernel.
        if !cfg!(target_os = "linux") {
            return;
        }
        let (a, _b) = pair(SocketKind::Stream);
        let files: Vec<OwnedFd> = (0..254).map(|_| temp_file_with(b"")).collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let cm = [ControlMessage::ScmRights(&raw)];
        let r = nix::sys::socket::sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"m")],
            &cm,
            MsgFlags::empty(),
            None,
        );
        assert_eq!(r, Err(Errno::EINVAL));
        let r = nix::sys::socket::sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"m")],
            &[ControlMessage::ScmRights(&raw[..253])],
            MsgFlags::empty(),
            None,
        );
        assert_eq!(r, Ok(1));
    }

    #[test]
    fn control_truncation_closes_what_arrived() {
        let base = open_fd_count();
        {
            let (a, b) = pair(SocketKind::Stream);
            let files: Vec<OwnedFd> = (0..10).map(|_| temp_file_with(b"")).collect();
            let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
            send_with_fds(a.as_fd(), &[IoSlice::new(b"m")], &borrowed).unwrap();
            let with_sent = open_fd_count();
            let mut fds = Vec::new();
            let err = recv_with_fds(b.as_fd(), &mut [0u8; 4], 3, &mut fds).unwrap_err();
            assert_eq!(err.code(), "ERR_FDS_TRUNCATED");
            assert!(fds.is_empty());
            // The control buffer has room for other control messages too, so more than
            // asked for may have arrived: they are closed all the same.
            assert!(matches!(err, Error::FdsTruncated { received } if received <= 10));
            assert_eq!(open_fd_count(), with_sent, "the truncated fds were closed");
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn fds_never_ride_an_empty_send() {
        let (a, _b) = pair(SocketKind::Stream);
        let file = temp_file_with(b"");
        let err = send_with_fds(a.as_fd(), &[], &[file.as_fd()]).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARG_VALUE");
        let err = send_with_fds(a.as_fd(), &[IoSlice::new(b"")], &[file.as_fd()]).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARG_VALUE");
    }

    #[test]
    fn closed_peer_is_epipe_not_sigpipe() {
        // Restore the default SIGPIPE action so that a missing MSG_NOSIGNAL would kill us.
        // SAFETY: installing SIG_DFL has no handler to be unsafe; the test harness does
        // not rely on SIGPIPE being ignored.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        }
        .unwrap();
        let (a, b) = pair(SocketKind::Stream);
        drop(b);
        let err = send_with_fds(a.as_fd(), &[IoSlice::new(b"x")], &[]).unwrap_err();
        assert_eq!(err.code(), "EPIPE");
        assert!(err.to_string().contains("peer has closed"));
    }

    #[test]
    fn record_too_large_is_typed() {
        let (a, _b) = pair(SocketKind::Dgram);
        let big = vec![0u8; 4 << 20];
        let err = send_with_fds(a.as_fd(), &[IoSlice::new(&big)], &[]).unwrap_err();
        assert_eq!(err.code(), "ERR_MESSAGE_TOO_LARGE");
    }

    #[test]
    fn record_truncation_is_reported() {
        let (a, b) = pair(crate::testutil::record_kind());
        send_with_fds(a.as_fd(), &[IoSlice::new(b"0123456789")], &[]).unwrap();
        let mut buf = [0u8; 4];
        let r = recv_with_fds(b.as_fd(), &mut buf, 0, &mut Vec::new()).unwrap();
        assert_eq!((r.bytes, r.truncated), (4, true));
    }

    #[test]
    fn eof_is_zero_bytes() {
        let (a, b) = pair(SocketKind::Stream);
        drop(a);
        let r = recv_with_fds(b.as_fd(), &mut [0u8; 4], 4, &mut Vec::new()).unwrap();
        assert_eq!(r.bytes, 0);
    }

    /// Sets an integer SOL_SOCKET option, as whoever shares a channel's socket may.
    #[cfg(target_os = "linux")]
    fn set_sol_socket(fd: &OwnedFd, option: libc::c_int) -> bool {
        let on: libc::c_int = 1;
        // SAFETY: `on` is a live c_int and the length passed is its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn credentials_beside_253_descriptors_still_fit_the_control_buffer() {
        let base = open_fd_count();
        {
            let (a, b) = pair(SocketKind::Stream);
            assert!(set_sol_socket(&b, libc::SO_PASSCRED));
            let files: Vec<OwnedFd> = (0..MAX_FDS_PER_MESSAGE)
                .map(|i| temp_file_with(format!("{i}").as_bytes()))
                .collect();
            let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
            send_with_fds(a.as_fd(), &[IoSlice::new(b"m")], &borrowed).unwrap();
            let mut fds = Vec::new();
            let r =
                recv_nonblocking(b.as_fd(), &mut [0u8; 4], MAX_FDS_PER_MESSAGE, &mut fds).unwrap();
            assert_eq!(r.fds, MAX_FDS_PER_MESSAGE);
            for (sent, got) in files.iter().zip(&fds) {
                assert_eq!(fd_inode(sent), fd_inode(got));
            }
        }
        assert_eq!(open_fd_count(), base);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pidfd_control_message_is_closed_not_leaked() {
        const SO_PASSPIDFD: libc::c_int = 76;
        let (a, b) = pair(SocketKind::Stream);
        if !set_sol_socket(&b, SO_PASSPIDFD) {
            return; // a kernel before 6.5: nothing to leak
        }
        let base = open_fd_count();
        for _ in 0..100 {
            send_with_fds(a.as_fd(), &[IoSlice::new(b"m")], &[]).unwrap();
            let mut fds = Vec::new();
            let r = recv_nonblocking(b.as_fd(), &mut [0u8; 4], 0, &mut fds).unwrap();
            assert_eq!((r.bytes, r.fds), (1, 0));
        }
        assert_eq!(open_fd_count(), base, "every pidfd was closed");
    }

    #[test]
    fn nonblocking_calls_never_wait_even_on_a_blocking_socket() {
        let (a, b) = pair(SocketKind::Stream); // blocking: O_NONBLOCK is clear
        let err = recv_nonblocking(b.as_fd(), &mut [0u8; 4], 0, &mut Vec::new()).unwrap_err();
        assert_eq!(err.code(), "EAGAIN");
        let chunk = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match send_nonblocking(a.as_fd(), &[IoSlice::new(&chunk)], &[]) {
                Ok(n) => total += n,
                Err(e) => {
                    assert_eq!(e.code(), "EAGAIN");
                    break;
                }
            }
            assert!(total < 1 << 30, "the socket never filled");
        }
    }
}
