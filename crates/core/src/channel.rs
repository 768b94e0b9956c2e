//! A channel's state machine without the event loop: an owned, non-blocking socket, the
//! frame decoder or record reader on the way in, the [`WriteQueue`] on the way out, and
//! the half-close bookkeeping. The Node layer calls [`ChannelCore::read`] when the socket
//! is readable and [`ChannelCore::flush`] when it is writable; everything else is here,
//! testable with `cargo test`.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{shutdown, Shutdown};

use crate::error::{Error, Result};
use crate::frame::{FrameDecoder, FrameHeader, Sink, HEADER_LEN};
use crate::msg::{recv_nonblocking, send_nonblocking, MAX_FDS_PER_MESSAGE};
use crate::socket::{self, SocketKind};
use crate::write_queue::{dup_for_queue, Flush, Refused, WriteQueue};

/// The default limit on one message's payload on a stream channel: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Payloads at least this large are written straight from the caller's memory when
/// nothing is queued, instead of being copied into the queue first.
pub const DIRECT_WRITE_BYTES: usize = 32 << 10;

/// Kernel buffer asked for on stream channels (SO_SNDBUF/SO_RCVBUF, raised to at least
/// this where the OS allows). Linux's default of 208 KiB makes a 1 MiB message cost
/// several poll round trips in each process.
pub const STREAM_SOCKET_BUFFER: usize = 1 << 20;

/// Bytes read per recvmsg on a stream channel.
pub const STREAM_READ_BYTES: usize = 256 << 10;

/// A payload still missing at least this much is received into its own buffer.
const DIRECT_READ_BYTES: usize = 64 << 10;

/// A read stops once the messages it completed hold this many payload bytes, leaving
/// the rest for the next call: large messages then reach the caller one or two at a
/// time instead of dozens (32 direct reads of 1 MiB would hold 32 MiB before any is
/// delivered), and their buffers are freed, and reused, as they go.
pub const READ_BATCH_BYTES: usize = 1 << 20;

/// The largest record a record channel receives (records are bounded by the socket
/// buffers anyway: about 208 KiB by default on Linux). The buffer is only touched as
/// far as records fill it.
pub const RECORD_READ_BYTES: usize = 4 << 20;

/// The read buffer [`ChannelCore::read`] needs for any channel: the largest record, and
/// one byte to tell a longer one.
pub const READ_BUFFER_BYTES: usize = RECORD_READ_BYTES + 1;

/// What a record read tells the sink may follow a record after the first (records of a
/// burst are small and many: let the sink pack them).
const RECORD_PACK_HINT: usize = 64 << 10;

/// Why a read stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// The socket has nothing more now (EAGAIN).
    Drained,
    /// The peer closed its sending side; nothing more will arrive.
    Eof,
    /// The per-call budget ran out with data still waiting: read again on the next turn.
    Budget,
}

/// A channel's socket and its in and out state.
#[derive(Debug)]
pub struct ChannelCore<B = Vec<u8>> {
    fd: OwnedFd,
    kind: SocketKind,
    max_message_bytes: usize,
    decoder: FrameDecoder<B>,
    writer: WriteQueue,
    read_eof: bool,
    end_requested: bool,
    write_shut: bool,
    /// The sequence number the next accepted `send()` gets.
    next_id: u64,
}

impl<B: AsMut<[u8]>> ChannelCore<B> {
    /// Takes ownership of a connected Unix socket: makes it non-blocking and
    /// close-on-exec, and learns its type. A stream socket's kernel buffers are raised
    /// to [`STREAM_SOCKET_BUFFER`] where the OS allows it.
    ///
    /// On failure the descriptor is handed back with the error, open.
    pub fn adopt(
        fd: OwnedFd,
        max_message_bytes: usize,
    ) -> std::result::Result<Self, (Error, OwnedFd)> {
        let prepared = (|| {
            let kind = socket::socket_kind(fd.as_fd())?;
            socket::check_unix_domain(fd.as_fd())?;
            socket::check_connected(fd.as_fd())?;
            socket::set_nonblocking(fd.as_fd(), true)?;
            socket::set_cloexec(fd.as_fd(), true)?;
            socket::prevent_sigpipe(fd.as_fd())?;
            Ok(kind)
        })();
        let kind = match prepared {
            Ok(kind) => kind,
            Err(e) => return Err((e, fd)),
        };
        if !kind.is_record() {
            // Large messages move in a quarter of the wake-ups (BENCHMARKS.md). Record
            // sockets keep the OS default: there the buffer is also the record size limit.
            socket::raise_buffers(fd.as_fd(), STREAM_SOCKET_BUFFER);
        }
        let max_message_bytes = max_message_bytes.min(crate::frame::MAX_PAYLOAD);
        Ok(ChannelCore {
            fd,
            kind,
            max_message_bytes,
            decoder: FrameDecoder::new(max_message_bytes),
            writer: if kind.is_record() {
                WriteQueue::new_record()
            } else {
                WriteQueue::new()
            },
            read_eof: false,
            end_requested: false,
            write_shut: false,
            next_id: 0,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives up the socket, open (what is queued is dropped, its descriptors closed).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.writer.queued_bytes()
    }

    /// Descriptors held open by queued messages.
    pub fn queued_fds(&self) -> usize {
        self.writer.queued_fds()
    }

    /// True while frames wait to be written (poll for writable).
    pub fn wants_write(&self) -> bool {
        !self.writer.is_empty()
    }

    /// The peer's end of stream has been read.
    pub fn read_done(&self) -> bool {
        self.read_eof
    }

    /// `end()` was called (what was queued before it may still be going out).
    pub fn end_requested(&self) -> bool {
        self.end_requested
    }

    /// `end()` was called and everything before it has been written and shut down.
    pub fn write_done(&self) -> bool {
        self.write_shut
    }

    /// Sends one message: written at once when that is cheap and nothing is queued,
    /// otherwise queued (a copy of the payload, duplicates of the descriptors) for
    /// [`flush`](Self::flush). Limits are checked first, so a message that is refused is
    /// refused whole, and the caller's descriptors stay the caller's either way.
    ///
    /// Returns the message's sequence number (0, 1, 2, … over the channel's accepted
    /// sends): [`take_refused`](Self::take_refused) names a queued message the kernel
    /// later refused by it, and [`oldest_unwritten`](Self::oldest_unwritten) tells which
    /// have been written.
    pub fn send(&mut self, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<u64> {
        self.send_with(payload, fds, false)
    }

    /// [`send`](Self::send), and with `eager` a message of any size is written at once
    /// when nothing is queued (a reply: one `sendmsg` now rather than a queue and a flush
    /// later; its descriptors are borrowed, not duplicated). The caller decides when that
    /// pays: the first message of a burst, not every one of it.
    pub fn send_with(
        &mut self,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        eager: bool,
    ) -> Result<u64> {
        let id = self.next_id;
        self.send_inner(payload, fds, id, eager)?;
        self.next_id += 1;
        Ok(id)
    }

    fn send_inner(
        &mut self,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        id: u64,
        eager: bool,
    ) -> Result<()> {
        if self.end_requested {
            return Err(Error::State {
                code: "ERR_STREAM_WRITE_AFTER_END",
                message: "cannot send after end(): this side of the channel has finished sending"
                    .into(),
            });
        }
        let header = FrameHeader::for_message(payload.len(), fds.len(), self.max_message_bytes)?;
        let large = !self.kind.is_record() && payload.len() >= DIRECT_WRITE_BYTES;
        if large && !self.writer.is_empty() {
            // Copy only what the kernel does not take: write what is queued first, then
            // this payload straight from the caller's memory if there is room. (An error
            // here is the connection's, and the flush that follows reports it.)
            let _ = self.writer.flush(self.fd.as_fd());
        }
        let direct = self.writer.is_empty() && (self.kind.is_record() || large || eager);
        if direct {
            let head = header.encode();
            let total = HEADER_LEN + payload.len();
            match send_nonblocking(
                self.fd.as_fd(),
                &[IoSlice::new(&head), IoSlice::new(payload)],
                fds,
            ) {
                Ok(n) if n == total => return Ok(()),
                Ok(n) => {
                    // The first byte, and with it the descriptors, went: queue the rest.
                    self.writer.push_rest(header, payload, n, id);
                    return Ok(());
                }
                Err(e) if e.errno() == Some(Errno::EAGAIN) => {} // queue it whole
                Err(e) => return Err(e),
            }
        }
        if self.kind.is_record() {
            // Queued behind others: check now what the kernel would refuse later, so the
            // refusal is this send's error rather than a failed flush.
            let limit = socket::record_limit(self.fd.as_fd())?;
            if HEADER_LEN + payload.len() > limit {
                return Err(Error::MessageTooLarge {
                    len: payload.len(),
                    max: Some(limit.saturating_sub(HEADER_LEN)),
                });
            }
        }
        let owned = fds
            .iter()
            .map(|fd| dup_for_queue(*fd))
            .collect::<Result<Vec<_>>>()?;
        self.writer.push(header, payload, owned, id);
        Ok(())
    }

    /// How many refused messages wait in [`take_refused`](Self::take_refused).
    pub fn refused_count(&self) -> usize {
        self.writer.refused_count()
    }

    /// The queued messages the kernel refused (each dropped whole, its descriptors
    /// closed) since the last call, oldest first.
    pub fn take_refused(&mut self) -> Vec<Refused> {
        self.writer.take_refused()
    }

    /// The sequence number of the oldest message not yet completely written, or the
    /// next one to be sent when everything has been: every message numbered below it
    /// has been handed to the kernel whole.
    pub fn oldest_unwritten(&self) -> u64 {
        self.writer.oldest_unwritten().unwrap_or(self.next_id)
    }

    /// Prepares to close without cutting a frame in half: drops every queued message
    /// that has not begun to go out, and keeps the rest of one that has. Returns whether
    /// something is left to write (flush until done, then close).
    pub fn abandon_unstarted(&mut self) -> bool {
        self.writer.keep_only_started()
    }

    /// Writes what is queued; once everything is written after `end()`, shuts down the
    /// sending side so the peer sees end of stream.
    pub fn flush(&mut self) -> Result<Flush> {
        let status = self.writer.flush(self.fd.as_fd())?;
        if status == Flush::Done && self.end_requested && !self.write_shut {
            self.shutdown_write()?;
        }
        Ok(status)
    }

    /// Half-close: no more sends; what is queued is still written, then the peer sees
    /// end of stream. It can keep sending to us.
    pub fn end(&mut self) -> Result<Flush> {
        self.end_requested = true;
        self.flush()
    }

    fn shutdown_write(&mut self) -> Result<()> {
        self.write_shut = true;
        match shutdown(self.fd_raw(), Shutdown::Write) {
            // The peer may be gone already; the read side reports that.
            Ok(()) | Err(Errno::ENOTCONN) => Ok(()),
            Err(e) => Err(Error::os("shutdown", e)),
        }
    }

    fn fd_raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Reads what the socket has, up to `max_reads` recvmsg calls, handing complete
    /// messages to `sink`. Bytes are received into `scratch` (any buffer of at least
    /// [`READ_BUFFER_BYTES`]: one per thread serves every channel), and a payload that
    /// spans receives straight into the buffer the sink gave it. On an error, the
    /// messages completed before it are in the sink (deliver them, then the error);
    /// everything queued has been closed.
    pub fn read<S: Sink<Buf = B>>(
        &mut self,
        max_reads: usize,
        scratch: &mut [u8],
        sink: &mut S,
    ) -> Result<ReadStatus> {
        if self.read_eof {
            return Ok(ReadStatus::Eof);
        }
        if self.kind.is_record() {
            self.read_records(max_reads, scratch, sink)
        } else {
            self.read_stream(max_reads, scratch, sink)
        }
    }

    fn read_stream<S: Sink<Buf = B>>(
        &mut self,
        max_reads: usize,
        scratch: &mut [u8],
        sink: &mut S,
    ) -> Result<ReadStatus> {
        let read_size = scratch.len().min(STREAM_READ_BYTES);
        if read_size == 0 {
            return Err(Error::Protocol("the read buffer is empty".into()));
        }
        let scratch = &mut scratch[..read_size];
        let mut batch_bytes = 0;
        for _ in 0..max_reads {
            if batch_bytes >= READ_BATCH_BYTES {
                return Ok(ReadStatus::Budget);
            }
            let mut fds = Vec::new();
            // A large payload in progress is received straight into its own buffer.
            let fd = self.fd.as_fd();
            let direct = match self.decoder.payload_buffer() {
                Some(rest) if rest.len() >= DIRECT_READ_BYTES => {
                    Some(recv_nonblocking(fd, rest, MAX_FDS_PER_MESSAGE, &mut fds))
                }
                _ => None,
            };
            let is_direct = direct.is_some();
            let received = match direct {
                Some(r) => r,
                None => recv_nonblocking(fd, scratch, MAX_FDS_PER_MESSAGE, &mut fds),
            };
            let r = match received {
                Ok(r) => r,
                Err(e) if e.errno() == Some(Errno::EAGAIN) => return Ok(ReadStatus::Drained),
                Err(e) => {
                    self.decoder = FrameDecoder::new(self.max_message_bytes); // closes queued fds
                    return Err(e);
                }
            };
            if r.bytes == 0 {
                self.read_eof = true;
                self.decoder.finish()?;
                return Ok(ReadStatus::Eof);
            }
            batch_bytes += r.bytes;
            if is_direct {
                self.decoder.payload_received(r.bytes, fds, sink)?;
            } else {
                let before = sink.count();
                self.decoder.push(&scratch[..r.bytes], fds, sink)?;
                // One lone message from a short read is the request/response pattern:
                // deliver it now rather than spend a recvmsg on learning the socket is
                // empty (level-triggered polling wakes us if more has come). Streams of
                // messages keep reading until EAGAIN, for bigger batches.
                if r.bytes < read_size && before == 0 && sink.count() == 1 {
                    return Ok(ReadStatus::Drained);
                }
            }
        }
        Ok(ReadStatus::Budget)
    }

    fn read_records<S: Sink<Buf = B>>(
        &mut self,
        max_reads: usize,
        scratch: &mut [u8],
        sink: &mut S,
    ) -> Result<ReadStatus> {
        // One byte more than the largest acceptable record, so that a longer one shows
        // as truncated even where MSG_TRUNC is not reported.
        let size = (self.max_message_bytes + HEADER_LEN).min(RECORD_READ_BYTES) + 1;
        let Some(scratch) = scratch.get_mut(..size) else {
            return Err(Error::Protocol(format!(
                "the read buffer ({} bytes) is smaller than a record may be ({size})",
                scratch.len()
            )));
        };
        let mut batch_bytes = 0;
        for i in 0..max_reads {
            if batch_bytes >= READ_BATCH_BYTES {
                return Ok(ReadStatus::Budget);
            }
            let mut fds = Vec::new();
            let r = match recv_nonblocking(self.fd.as_fd(), scratch, MAX_FDS_PER_MESSAGE, &mut fds)
            {
                Ok(r) => r,
                Err(e) if e.errno() == Some(Errno::EAGAIN) => return Ok(ReadStatus::Drained),
                Err(e) => return Err(e),
            };
            // An empty record from a peer that is still connected is not the end (it is a
            // protocol error below: a frame has a header).
            if socket::is_end_of_stream(self.fd.as_fd(), self.kind, r.bytes, fds.len())? {
                self.read_eof = true;
                return Ok(ReadStatus::Eof);
            }
            if r.truncated || r.bytes > self.max_message_bytes + HEADER_LEN {
                return Err(Error::MessageTooLarge {
                    len: r.bytes,
                    max: Some(self.max_message_bytes.min(RECORD_READ_BYTES - HEADER_LEN)),
                });
            }
            let payload = parse_record(&scratch[..r.bytes], fds.len(), self.max_message_bytes)?;
            batch_bytes += payload.len();
            // After the first record of a read, more are likely to follow: a hint that
            // lets the sink pack small ones together.
            let following = if i == 0 { 0 } else { RECORD_PACK_HINT };
            sink.complete(payload, fds, following)?;
        }
        Ok(ReadStatus::Budget)
    }
}

/// One record is one frame: its header must describe exactly the record and the
/// `nfds` descriptors that came with it. Returns the payload.
fn parse_record(record: &[u8], nfds: usize, max: usize) -> Result<&[u8]> {
    let Some(head) = record.first_chunk::<HEADER_LEN>() else {
        return Err(Error::Protocol(format!(
            "record of {} bytes is shorter than a frame header",
            record.len()
        )));
    };
    let header = FrameHeader::decode(head, max)?;
    let payload = &record[HEADER_LEN..];
    if header.len as usize != payload.len() {
        return Err(Error::Protocol(format!(
            "record header declares {} payload bytes but the record carries {}",
            header.len,
            payload.len()
        )));
    }
    if header.nfds as usize != nfds {
        return Err(Error::Protocol(format!(
            "record header declares {} descriptors but {nfds} came with it",
            header.nfds,
        )));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Message;

    type Core = ChannelCore<Vec<u8>>;

    fn read_all(ch: &mut Core, max_reads: usize, out: &mut Vec<Message>) -> Result<ReadStatus> {
        let mut scratch = vec![0u8; READ_BUFFER_BYTES];
        ch.read(max_reads, &mut scratch, out)
    }
    use crate::msg::send_with_fds;
    use crate::socket::{socketpair, PairOptions};
    use crate::testutil::{fd_inode, open_fd_count, temp_file_with};

    fn pair(kind: SocketKind) -> (ChannelCore, ChannelCore) {
        let (a, b) = socketpair(kind, PairOptions::default()).unwrap();
        (
            Core::adopt(a, DEFAULT_MAX_MESSAGE_BYTES).unwrap(),
            Core::adopt(b, DEFAULT_MAX_MESSAGE_BYTES).unwrap(),
        )
    }

    /// Reads until `count` messages or end of stream, polling in between.
    fn collect(ch: &mut Core, count: usize) -> (Vec<Message>, bool) {
        let mut out = Vec::new();
        loop {
            match read_all(ch, 16, &mut out).unwrap() {
                ReadStatus::Eof => return (out, true),
                _ if out.len() >= count => return (out, false),
                ReadStatus::Drained => std::thread::sleep(std::time::Duration::from_millis(1)),
                ReadStatus::Budget => {}
            }
        }
    }

    use crate::testutil::kinds;

    #[test]
    fn messages_and_fds_in_order_on_every_kind() {
        let base = open_fd_count();
        for kind in kinds() {
            let (mut a, mut b) = pair(kind);
            let files: Vec<OwnedFd> = (0..3)
                .map(|i| temp_file_with(format!("{i}").as_bytes()))
                .collect();
            a.send(b"zero", &[]).unwrap();
            a.send(b"one", &[files[0].as_fd()]).unwrap();
            a.send(b"", &[files[1].as_fd(), files[2].as_fd()]).unwrap();
            assert_eq!(a.flush().unwrap(), Flush::Done);
            let (got, _) = collect(&mut b, 3);
            assert_eq!(got.len(), 3, "{kind:?}");
            assert_eq!(got[0].data, b"zero");
            assert_eq!(got[1].data, b"one");
            assert_eq!(got[2].data, b"");
            assert_eq!(fd_inode(&got[1].fds[0]), fd_inode(&files[0]));
            assert_eq!(
                got[2].fds.iter().map(fd_inode).collect::<Vec<_>>(),
                vec![fd_inode(&files[1]), fd_inode(&files[2])]
            );
        }
        assert_eq!(open_fd_count(), base);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stream_buffers_are_raised_and_record_buffers_left_alone() {
        use nix::sys::socket::{getsockopt, sockopt};
        let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (plain, _) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
        let default = getsockopt(&plain, sockopt::SndBuf).unwrap();
        let (a, _b) = pair(SocketKind::Stream);
        let raised = getsockopt(&a.fd(), sockopt::SndBuf).unwrap();
        // Linux doubles the value set, capped at wmem_max.
        let expected = (STREAM_SOCKET_BUFFER.min(wmem_max) * 2).max(default);
        assert_eq!(raised, expected);
        let (r, _s) = pair(SocketKind::Seqpacket);
        assert_eq!(getsockopt(&r.fd(), sockopt::SndBuf).unwrap(), default);
    }

    #[test]
    fn n_messages_then_eof() {
        for kind in kinds().into_iter().filter(|k| *k != SocketKind::Dgram) {
            let (mut a, mut b) = pair(kind);
            for i in 0..50 {
                a.send(format!("{i}").as_bytes(), &[]).unwrap();
            }
            a.flush().unwrap();
            drop(a);
            let (got, eof) = collect(&mut b, usize::MAX);
            assert!(eof, "{kind:?}");
            assert_eq!(got.len(), 50);
            assert_eq!(got[49].data, b"49");
        }
    }

    #[test]
    fn half_close_then_reply() {
        for kind in kinds().into_iter().filter(|k| *k != SocketKind::Dgram) {
            let (mut a, mut b) = pair(kind);
            a.send(b"question", &[]).unwrap();
            assert_eq!(a.end().unwrap(), Flush::Done);
            assert!(a.write_done());
            assert!(a.send(b"more", &[]).is_err(), "no sends after end()");
            let (got, eof) = collect(&mut b, usize::MAX);
            assert!(eof, "{kind:?}: b saw the end");
            assert_eq!(got[0].data, b"question");
            b.send(b"answer", &[]).unwrap();
            b.flush().unwrap();
            let (got, _) = collect(&mut a, 1);
            assert_eq!(got[0].data, b"answer", "{kind:?}: a can still receive");
        }
    }

    #[test]
    fn large_message_is_written_directly_then_the_rest_queued() {
        let base = open_fd_count();
        {
            let (mut a, mut b) = pair(SocketKind::Stream);
            let file = temp_file_with(b"big");
            let payload: Vec<u8> = (0..16 << 20).map(|i| (i % 253) as u8).collect();
            a.send(&payload, &[file.as_fd()]).unwrap();
            assert!(a.wants_write(), "16 MiB does not fit the socket at once");
            a.send(b"after", &[file.as_fd()]).unwrap();
            let got = std::thread::scope(|s| {
                let r = s.spawn(|| collect(&mut b, 2).0);
                while a.flush().unwrap() == Flush::WouldBlock {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                r.join().unwrap()
            });
            assert_eq!(got.len(), 2);
            assert!(got[0].data == payload);
            assert_eq!(got[0].fds.len(), 1);
            assert_eq!(got[1].data, b"after");
            assert_eq!(fd_inode(&got[1].fds[0]), fd_inode(&file));
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn a_read_hands_over_about_read_batch_bytes_at_a_time() {
        const N: usize = 12;
        const SIZE: usize = 400 << 10;
        let base = open_fd_count();
        {
            let (mut a, mut b) = pair(SocketKind::Stream);
            for i in 0..N {
                a.send(&vec![i as u8; SIZE], &[]).unwrap();
            }
            // Fill the kernel buffers (about 2 MiB: five messages) before the first read.
            assert_eq!(a.flush().unwrap(), Flush::WouldBlock);
            let mut got = Vec::new();
            let mut calls = Vec::new();
            while got.len() < N {
                let mut out = Vec::new();
                let status = read_all(&mut b, 32, &mut out).unwrap();
                let bytes: usize = out.iter().map(|m| m.data.len()).sum();
                // The read stops at the first message that reaches the batch size.
                assert!(
                    bytes < READ_BATCH_BYTES + SIZE,
                    "{} messages in one read",
                    out.len()
                );
                calls.push((out.len(), status));
                got.append(&mut out);
                let _ = a.flush().unwrap();
            }
            assert!(
                calls.iter().any(|&(_, s)| s == ReadStatus::Budget),
                "some read stopped at the batch size: {calls:?}"
            );
            for (i, m) in got.iter().enumerate() {
                assert!(
                    m.data.len() == SIZE && m.data.iter().all(|&x| x == i as u8),
                    "{i}"
                );
            }
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn caller_may_close_its_fds_right_after_send() {
        let (mut a, mut b) = pair(SocketKind::Stream);
        let file = temp_file_with(b"still here");
        let id = fd_inode(&file);
        a.send(b"x", &[file.as_fd()]).unwrap(); // queued: the queue holds a duplicate
        drop(file);
        a.flush().unwrap();
        let (got, _) = collect(&mut b, 1);
        assert_eq!(fd_inode(&got[0].fds[0]), id);
    }

    #[test]
    fn limits_are_checked_before_anything_is_sent() {
        let (a, _b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
        let mut a = Core::adopt(a, 10).unwrap();
        assert_eq!(
            a.send(&[0u8; 11], &[]).unwrap_err().code(),
            "ERR_MESSAGE_TOO_LARGE"
        );
        let files: Vec<OwnedFd> = (0..254).map(|_| temp_file_with(b"")).collect();
        let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        assert_eq!(
            a.send(b"x", &borrowed).unwrap_err().code(),
            "ERR_TOO_MANY_FDS"
        );
        assert_eq!(a.queued_bytes(), 0);
    }

    #[test]
    fn record_too_large_is_typed() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let (mut a, _b) = pair(SocketKind::Seqpacket);
        let err = a.send(&vec![0u8; 8 << 20], &[]).unwrap_err();
        assert_eq!(err.code(), "ERR_MESSAGE_TOO_LARGE");
        a.send(b"small still works", &[]).unwrap();
    }

    #[test]
    fn hostile_record_headers() {
        let base = open_fd_count();
        {
            let (raw, b) =
                socketpair(crate::testutil::record_kind(), PairOptions::default()).unwrap();
            let mut b = Core::adopt(b, 1024).unwrap();
            let file = temp_file_with(b"");
            // Header says 5 bytes, record has 3; and one fd that the header does not count.
            let mut rec = FrameHeader::new(5, 0).encode().to_vec();
            rec.extend_from_slice(b"abc");
            send_with_fds(raw.as_fd(), &[IoSlice::new(&rec)], &[file.as_fd()]).unwrap();
            let mut out = Vec::new();
            let err = read_all(&mut b, 4, &mut out).unwrap_err();
            assert_eq!(err.code(), "ERR_PROTOCOL");
            assert!(out.is_empty());
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn adopting_a_tcp_socket_is_refused_and_hands_the_descriptor_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = OwnedFd::from(client);
        let id = fd_inode(&fd);
        let (err, back) = Core::adopt(fd, 1024).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARG_VALUE");
        assert!(err.to_string().contains("Unix-domain"), "{err}");
        assert_eq!(fd_inode(&back), id, "the same descriptor, still open");
    }

    #[test]
    fn a_peer_clearing_o_nonblock_cannot_make_reads_or_writes_wait() {
        let (mut a, mut b) = pair(SocketKind::Stream);
        // Whoever shares the open file description can do this at any time.
        socket::set_nonblocking(a.fd(), false).unwrap();
        socket::set_nonblocking(b.fd(), false).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let read = read_all(&mut b, 4, &mut out).map_err(|e| e.code());
            let mut sent = 0usize;
            let chunk = vec![1u8; 1 << 20];
            // Far more than the kernel holds: the rest must queue, not block.
            for _ in 0..16 {
                if b.send(&chunk, &[]).is_ok() {
                    sent += 1;
                }
            }
            let flushed = b.flush().map_err(|e| e.code());
            let _ = tx.send((read, sent, flushed, b.queued_bytes()));
        });
        let (read, sent, flushed, queued) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a read or a write blocked");
        assert_eq!(read, Ok(ReadStatus::Drained));
        assert_eq!(sent, 16);
        assert_eq!(flushed, Ok(Flush::WouldBlock));
        assert!(queued > 0);
        let mut out = Vec::new();
        assert_eq!(read_all(&mut a, 1, &mut out).unwrap(), ReadStatus::Budget);
    }

    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    #[test]
    fn an_empty_seqpacket_record_is_a_protocol_error_not_end_of_stream() {
        let (raw, b) = socketpair(SocketKind::Seqpacket, PairOptions::default()).unwrap();
        let mut b = Core::adopt(b, 1024).unwrap();
        send_with_fds(raw.as_fd(), &[IoSlice::new(&[])], &[]).unwrap();
        let mut out = Vec::new();
        let err = read_all(&mut b, 4, &mut out).unwrap_err();
        assert_eq!(err.code(), "ERR_PROTOCOL");
        assert!(!b.read_done());
        // Whereas a peer that closes is end of stream.
        let (raw, c) = socketpair(SocketKind::Seqpacket, PairOptions::default()).unwrap();
        let mut c = Core::adopt(c, 1024).unwrap();
        drop(raw);
        assert_eq!(read_all(&mut c, 4, &mut out).unwrap(), ReadStatus::Eof);
    }

    #[test]
    fn a_queued_record_too_large_for_the_socket_is_refused_by_send() {
        for kind in kinds().into_iter().filter(|k| k.is_record()) {
            let (mut a, mut b) = pair(kind);
            let limit = socket::record_limit(a.fd()).unwrap();
            // Fill the socket so that the next sends queue.
            let mut n = 0u32;
            while !a.wants_write() {
                a.send(&n.to_le_bytes(), &[]).unwrap();
                n += 1;
                assert!(n < 1_000_000, "{kind:?}: the socket never filled");
            }
            let err = a.send(&vec![0u8; limit], &[]).unwrap_err();
            assert_eq!(err.code(), "ERR_MESSAGE_TOO_LARGE", "{kind:?}");
            a.send(b"after", &[]).unwrap();
            let mut got = Vec::new();
            while got.len() < n as usize + 1 {
                let _ = a.flush().unwrap();
                let _ = read_all(&mut b, 64, &mut got).unwrap();
            }
            assert_eq!(got.last().unwrap().data, b"after", "{kind:?}");
        }
    }

    /// An io_uring instance: a descriptor Linux refuses to pass (EINVAL), or None where
    /// the kernel does not offer io_uring.
    #[cfg(target_os = "linux")]
    fn io_uring_fd() -> Option<OwnedFd> {
        use std::os::fd::FromRawFd;
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup(2) with 4 entries and a zeroed io_uring_params, which it
        // reads and writes within its 120 bytes.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
        // SAFETY: a fresh descriptor nobody else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_queued_descriptor_the_kernel_refuses_fails_that_message_only() {
        let Some(ring) = io_uring_fd() else { return };
        let base = open_fd_count();
        {
            let (mut a, mut b) = pair(SocketKind::Stream);
            let file = temp_file_with(b"kept");
            // Written at once (a large payload, nothing queued): the send's own error.
            let err = a.send(&vec![0u8; 64 << 10], &[ring.as_fd()]).unwrap_err();
            assert_eq!(err.code(), "EINVAL");
            // Small messages wait for the flush, coalesced: only the guilty one fails.
            assert_eq!(a.send(b"ring", &[ring.as_fd()]).unwrap(), 0);
            assert_eq!(a.flush().unwrap(), Flush::Done);
            let r = a.take_refused();
            assert_eq!((r.len(), r[0].id), (1, 0));
            // Queued behind a partly written frame.
            let big = vec![7u8; 4 << 20];
            let first = a.send(&big, &[]).unwrap();
            assert!(a.wants_write());
            let before = a.send(b"before", &[file.as_fd()]).unwrap();
            let refused = a.send(b"ring", &[ring.as_fd()]).unwrap();
            let after = a.send(b"after", &[file.as_fd()]).unwrap();
            assert_eq!((first, before, refused, after), (1, 2, 3, 4));
            let mut got = Vec::new();
            let mut refusals = Vec::new();
            while got.len() < 3 {
                let _ = a.flush().unwrap();
                refusals.extend(a.take_refused());
                let _ = read_all(&mut b, 64, &mut got).unwrap();
            }
            assert_eq!(refusals.len(), 1);
            assert_eq!(refusals[0].id, refused);
            assert_eq!(refusals[0].error.code(), "EINVAL");
            assert_eq!(got.len(), 3);
            assert!(got[0].data == big);
            assert_eq!(got[1].data, b"before");
            assert_eq!(got[2].data, b"after");
            assert_eq!(fd_inode(&got[2].fds[0]), fd_inode(&file));
            assert_eq!(a.oldest_unwritten(), 5);
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn abandoning_keeps_the_rest_of_a_started_frame_only() {
        let (mut a, mut b) = pair(SocketKind::Stream);
        let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
        a.send(&big, &[]).unwrap(); // partly written: the socket holds about 2 MiB
        a.send(b"never", &[]).unwrap();
        assert!(a.abandon_unstarted(), "the rest of the big frame is left");
        let mut got = Vec::new();
        loop {
            let flushed = a.flush().unwrap();
            let _ = read_all(&mut b, 64, &mut got).unwrap();
            if flushed == Flush::Done && !a.wants_write() {
                break;
            }
        }
        drop(a);
        let (rest, eof) = collect(&mut b, usize::MAX);
        got.extend(rest);
        assert!(eof);
        assert_eq!(got.len(), 1, "the started frame whole, nothing after it");
        assert!(got[0].data == big);
        // Nothing begun: nothing left.
        let (mut c, _d) = pair(SocketKind::Stream);
        c.send(b"x", &[]).unwrap();
        assert!(!c.abandon_unstarted());
    }
}
