//! Whole-frame send and receive for callers that can wait: the reference use of the
//! wire format, used by tests, examples and the benchmark's native peer.
//!
//! The rules a writer must follow (PROTOCOL.md): the frame's descriptors ride on the
//! sendmsg that carries its first byte; after a partial write the rest goes without
//! them; EAGAIN with nothing sent means try again *with* them.

use std::io::IoSlice;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::frame::{FrameDecoder, FrameHeader, Message};
use crate::msg::{recv_with_fds, send_with_fds, MAX_FDS_PER_MESSAGE};

/// Writes one whole frame, waiting for the socket as needed (blocking or not).
pub fn write_frame(fd: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    write_frames(fd, &[(payload, fds)])
}

/// Writes several frames, coalescing them into as few sendmsg calls as the limits allow
/// (at most [`MAX_FDS_PER_MESSAGE`] descriptors and [`MAX_IOVECS`] buffers per call).
/// Each group's descriptors ride on the group's first byte, which is a frame boundary;
/// the receiver's FIFO hands every frame its own.
pub fn write_frames(fd: BorrowedFd<'_>, frames: &[(&[u8], &[BorrowedFd<'_>])]) -> Result<()> {
    let headers = frames
        .iter()
        .map(|(payload, fds)| {
            Ok(FrameHeader::for_message(payload.len(), fds.len(), usize::MAX)?.encode())
        })
        .collect::<Result<Vec<_>>>()?;
    let mut start = 0;
    while start < frames.len() {
        let mut end = start;
        let mut nfds = 0;
        while end < frames.len()
            && (end - start + 1) * 2 <= MAX_IOVECS
            && nfds + frames[end].1.len() <= MAX_FDS_PER_MESSAGE
        {
            nfds += frames[end].1.len();
            end += 1;
        }
        let mut bufs = Vec::with_capacity((end - start) * 2);
        let mut fds = Vec::with_capacity(nfds);
        for (header, (payload, frame_fds)) in headers[start..end].iter().zip(&frames[start..end]) {
            bufs.push(&header[..]);
            bufs.push(*payload);
            fds.extend_from_slice(frame_fds);
        }
        write_group(fd, &bufs, &fds)?;
        start = end;
    }
    Ok(())
}

/// Most buffers handed to one sendmsg (POSIX guarantees IOV_MAX >= 16; Linux, macOS and
/// FreeBSD have 1024).
pub const MAX_IOVECS: usize = 1024;

fn write_group(fd: BorrowedFd<'_>, bufs: &[&[u8]], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut sent = 0;
    while sent < total {
        let slices = remaining(bufs, sent);
        // Descriptors only until the first byte has gone; after a partial write the
        // rest goes without them.
        let attach = if sent == 0 { fds } else { &[] };
        match send_with_fds(fd, &slices, attach) {
            Ok(n) => sent += n,
            Err(e) if e.errno() == Some(Errno::EAGAIN) => wait(fd, PollFlags::POLLOUT)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The buffers left after `skip` bytes have been sent.
fn remaining<'a>(bufs: &[&'a [u8]], mut skip: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out.push(IoSlice::new(&b[skip..]));
        skip = 0;
    }
    out
}

fn wait(fd: BorrowedFd<'_>, events: PollFlags) -> Result<()> {
    let mut fds = [PollFd::new(fd, events)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(Error::os("poll", e)),
    }
}

/// Reads from a stream socket into `decoder` until at least one message is complete,
/// reading at most `read_size` bytes per recvmsg. Returns the messages (possibly more
/// than one), or `None` at a clean end of stream.
pub fn read_messages(
    fd: BorrowedFd<'_>,
    decoder: &mut FrameDecoder,
    read_size: usize,
) -> Result<Option<Vec<Message>>> {
    let mut buf = vec![0u8; read_size.max(1)];
    let mut out = Vec::new();
    loop {
        let mut fds: Vec<OwnedFd> = Vec::new();
        let r = match recv_with_fds(fd, &mut buf, MAX_FDS_PER_MESSAGE, &mut fds) {
            Ok(r) => r,
            Err(e) if e.errno() == Some(Errno::EAGAIN) => {
                wait(fd, PollFlags::POLLIN)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if r.bytes == 0 {
            decoder.finish()?;
            return Ok(if out.is_empty() { None } else { Some(out) });
        }
        decoder.push(&buf[..r.bytes], fds, &mut out)?;
        if !out.is_empty() {
            return Ok(Some(out));
        }
    }
}
