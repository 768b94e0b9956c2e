//! The low-level synchronous API: numbers are descriptors, as in C.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use napi::bindgen_prelude::BufferSlice;
use napi::Env;
use napi_derive::napi;
use socketpair_core::msg::{self, MAX_FDS_PER_MESSAGE};
use socketpair_core::socket::{self, PairOptions, SocketKind};
use socketpair_core::{peercred, Error};

/// Throws `e` as a JS `Error` shaped like Node's (`code`; `errno` and `syscall` for
/// system errors), and tells napi-rs the exception is already pending.
pub(crate) fn throw(env: &Env, e: Error) -> napi::Error {
    crate::js::throw(env.raw(), e)
}

/// Borrows a descriptor number that JS handed us, for the length of one call.
pub(crate) fn borrow(env: &Env, fd: i32, what: &str) -> napi::Result<BorrowedFd<'static>> {
    if fd < 0 {
        return Err(throw(
            env,
            Error::InvalidArgument(format!(
                "{what} must be a non-negative integer descriptor, got {fd}"
            )),
        ));
    }
    // SAFETY: fd is not -1 (BorrowedFd's niche). The borrow never outlives the call that
    // made it, and the number only ever reaches the kernel, which answers EBADF for a
    // descriptor that is not open: no memory is at stake.
    Ok(unsafe { BorrowedFd::borrow_raw(fd as RawFd) })
}

/// Hands ownership of received descriptors to JS, which must close them.
fn release(fds: Vec<OwnedFd>) -> Vec<i32> {
    fds.into_iter().map(|fd| fd.into_raw_fd()).collect()
}

/// The package's version as compiled into the binary (the loader compares it).
#[napi]
pub fn binary_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// The most descriptors one message can carry.
#[napi]
pub fn max_fds_per_message() -> u32 {
    MAX_FDS_PER_MESSAGE as u32
}

/// The default limit on one message's payload (`ChannelOptions.maxMessageBytes`).
#[napi]
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 =
    socketpair_core::channel::DEFAULT_MAX_MESSAGE_BYTES as u32;

/// socketpair(2): `[fd0, fd1]`.
#[napi]
pub fn socketpair(env: Env, kind: String, cloexec: bool, nonblock: bool) -> napi::Result<Vec<i32>> {
    let kind = SocketKind::parse(&kind).map_err(|e| throw(&env, e))?;
    let (a, b) =
        socket::socketpair(kind, PairOptions { cloexec, nonblock }).map_err(|e| throw(&env, e))?;
    Ok(release(vec![a, b]))
}

/// sendmsg(2) with `fds` attached to the first byte; returns the bytes sent.
#[napi]
pub fn sendmsg(env: Env, fd: i32, data: BufferSlice, fds: Vec<i32>) -> napi::Result<i64> {
    let sock = borrow(&env, fd, "fd")?;
    socket::prevent_sigpipe(sock).map_err(|e| throw(&env, e))?;
    let borrowed = fds
        .iter()
        .map(|&f| borrow(&env, f, "every passed descriptor"))
        .collect::<napi::Result<Vec<_>>>()?;
    let n =
        msg::send_with_fds(sock, &[IoSlice::new(&data)], &borrowed).map_err(|e| throw(&env, e))?;
    Ok(n as i64)
}

/// What recvmsg(2) returned; `bytes` were written into the caller's buffer.
#[napi(object)]
pub struct Received {
    pub bytes: i64,
    pub fds: Vec<i32>,
    pub truncated: bool,
    /// The peer closed: 0 bytes from a stream or seqpacket socket.
    pub eof: bool,
}

/// recvmsg(2) into a buffer JS allocated (so received data lives in JS memory).
#[napi]
pub fn recvmsg(env: Env, fd: i32, mut buf: BufferSlice, max_fds: u32) -> napi::Result<Received> {
    let sock = borrow(&env, fd, "fd")?;
    let mut fds = Vec::new();
    let r = msg::recv_with_fds(sock.as_fd(), &mut buf, max_fds as usize, &mut fds)
        .map_err(|e| throw(&env, e))?;
    // Zero bytes is end of stream on a stream socket. On a datagram socket an empty
    // record is a message; on a seqpacket socket it is one too unless the peer has shut
    // down (then the kernel reports end of stream). Ask the socket only in that rare case.
    let eof = r.bytes == 0
        && r.fds == 0
        && socket::socket_kind(sock)
            .and_then(|kind| socket::is_end_of_stream(sock, kind, r.bytes, r.fds))
            .map_err(|e| throw(&env, e))?;
    Ok(Received {
        bytes: r.bytes as i64,
        fds: release(fds),
        truncated: r.truncated,
        eof,
    })
}

/// The peer's credentials.
#[napi(object)]
pub struct Credentials {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

#[napi]
pub fn peer_credentials(env: Env, fd: i32) -> napi::Result<Credentials> {
    let c = peercred::peer_credentials(borrow(&env, fd, "fd")?).map_err(|e| throw(&env, e))?;
    Ok(Credentials {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

/// close(2) on each descriptor; every one is attempted, the first failure is thrown. A
/// descriptor an open channel owns is left open (`ERR_FD_IN_USE`): closing it behind the
/// channel's back would leave the channel with a number that may come to mean another
/// file.
#[napi]
pub fn close_fds(env: Env, fds: Vec<i32>) -> napi::Result<()> {
    let mut first_error = None;
    for fd in fds {
        if fd < 0 {
            first_error.get_or_insert(Error::InvalidArgument(format!(
                "descriptors must be non-negative integers, got {fd}"
            )));
            continue;
        }
        if crate::registry::owned_by_channel(fd) {
            first_error.get_or_insert(crate::registry::in_use(fd));
            continue;
        }
        if let Err(e) = nix::unistd::close(fd) {
            // EINTR still closed the descriptor on Linux and the BSDs: never retry.
            if e != nix::errno::Errno::EINTR {
                first_error.get_or_insert(Error::os("close", e));
            }
        }
    }
    match first_error {
        Some(e) => Err(throw(&env, e)),
        None => Ok(()),
    }
}
