//! The outgoing side of a stream channel: queued frames, their descriptors beside them,
//! and the partial-write bookkeeping of PROTOCOL.md.
//!
//! Small frames are packed back to back in one shared buffer; a large frame (at least
//! [`OWN_FRAME_BYTES`]) is kept in a buffer of its own, allocated at its exact size, so
//! that queueing it costs one copy and nothing is ever regrown or moved. Flushing hands
//! the kernel as many queued frames as the limits allow in one vectored sendmsg —
//! their descriptors too, since the receiver's FIFO hands each frame its own. The rules:
//! a sendmsg that carries descriptors starts at a frame boundary; after a partial write
//! the rest goes without them (the frames whose descriptors already went are marked);
//! EAGAIN with nothing sent changes nothing.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use crate::blocking::MAX_IOVECS;
use crate::error::{Error, Result};
use crate::frame::{FrameHeader, HEADER_LEN};
use crate::msg::{send_nonblocking, MAX_FDS_PER_MESSAGE};

/// Frames at least this large (header included) get a buffer of their own.
pub const OWN_FRAME_BYTES: usize = 16 << 10;

/// Where a queued frame's unwritten bytes are.
#[derive(Debug)]
enum Bytes {
    /// In the shared buffer, at `start..end`.
    Shared { start: usize, end: usize },
    /// In a buffer of its own.
    Own(Vec<u8>),
}

/// One queued frame: its bytes, its descriptors, and the sequence number of the send
/// that made it (so a refusal can name the message).
#[derive(Debug)]
struct Queued {
    bytes: Bytes,
    fds: Vec<OwnedFd>,
    fds_sent: bool,
    /// The frame's first bytes went out before it was queued (`push_rest`): its first
    /// queued byte is not a frame boundary.
    partial: bool,
    id: u64,
}

impl Queued {
    fn len(&self) -> usize {
        match &self.bytes {
            Bytes::Shared { start, end } => end - start,
            Bytes::Own(v) => v.len(),
        }
    }

    fn slice<'a>(&'a self, shared: &'a [u8]) -> &'a [u8] {
        match &self.bytes {
            Bytes::Shared { start, end } => &shared[*start..*end],
            Bytes::Own(v) => v,
        }
    }
}

/// A queued message the kernel refused whole (nothing of it was written): its send's
/// sequence number and why. The frames around it are unaffected.
#[derive(Debug)]
pub struct Refused {
    pub id: u64,
    pub error: Error,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued has been written.
    Done,
    /// The socket is full: poll for writable and flush again.
    WouldBlock,
}

/// Frames waiting to be written. See the module docs for the rules it keeps.
#[derive(Debug, Default)]
pub struct WriteQueue {
    /// The bytes of small frames, back to back.
    shared: Vec<u8>,
    frames: VecDeque<Queued>,
    /// Bytes of the front frame already written.
    front_sent: usize,
    /// Bytes queued and not yet written.
    queued: usize,
    /// Record socket (seqpacket/dgram): one frame per sendmsg, never coalesced.
    record: bool,
    /// Descriptors held by queued frames (duplicates, closed when the frame is written).
    held_fds: usize,
    /// A coalesced send was refused: send frames one at a time until the one to blame
    /// has been found (and dropped).
    isolate: bool,
    /// Messages refused since the caller last asked ([`WriteQueue::take_refused`]).
    refused: Vec<Refused>,
}

/// The next sendmsg: its buffers, how many frames it begins or continues, and the
/// descriptors it carries (borrowed from the queue, which keeps ownership until the
/// frame is written).
struct NextSend<'a> {
    iov: Vec<IoSlice<'a>>,
    frames: usize,
    fds: Vec<BorrowedFd<'a>>,
}

impl WriteQueue {
    /// A queue for a stream socket.
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue for a record socket: every frame is its own sendmsg (one record).
    pub fn new_record() -> Self {
        WriteQueue {
            record: true,
            ..Self::default()
        }
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Descriptors the queue holds open for frames not yet written.
    pub fn queued_fds(&self) -> usize {
        self.held_fds
    }

    /// Appends a frame: header and a copy of `payload`; the queue owns `fds` (duplicates
    /// of the caller's, so the caller may close its own right away).
    pub fn push(&mut self, header: FrameHeader, payload: &[u8], fds: Vec<OwnedFd>, id: u64) {
        let head = header.encode();
        self.push_bytes(&head, payload, fds, false, id);
    }

    /// Appends the unsent rest of a frame whose first `already_sent` bytes (and all its
    /// descriptors) went out directly, without queueing. The queue must be empty.
    pub fn push_rest(&mut self, header: FrameHeader, payload: &[u8], already_sent: usize, id: u64) {
        debug_assert!(self.is_empty());
        let head = header.encode();
        if already_sent < HEADER_LEN {
            self.push_bytes(&head[already_sent..], payload, Vec::new(), true, id);
        } else {
            let rest = payload.get(already_sent - HEADER_LEN..).unwrap_or_default();
            self.push_bytes(&[], rest, Vec::new(), true, id);
        }
        if let Some(q) = self.frames.back_mut() {
            q.fds_sent = true;
        }
    }

    fn push_bytes(
        &mut self,
        head: &[u8],
        payload: &[u8],
        fds: Vec<OwnedFd>,
        partial: bool,
        id: u64,
    ) {
        let len = head.len() + payload.len();
        let bytes = if len >= OWN_FRAME_BYTES {
            let mut own = Vec::with_capacity(len);
            own.extend_from_slice(head);
            own.extend_from_slice(payload);
            Bytes::Own(own)
        } else {
            self.compact();
            let start = self.shared.len();
            self.shared.extend_from_slice(head);
            self.shared.extend_from_slice(payload);
            Bytes::Shared {
                start,
                end: self.shared.len(),
            }
        };
        self.queued += len;
        self.held_fds += fds.len();
        self.frames.push_back(Queued {
            bytes,
            fds,
            fds_sent: false,
            partial,
            id,
        });
    }

    /// Writes as much as the socket takes. Retries partial writes until the queue is
    /// empty or the kernel says EAGAIN.
    ///
    /// A send the kernel refuses because of what one message carries (a descriptor it
    /// will not pass, a record too large) fails that message only: the frames are retried
    /// one at a time, the one to blame is dropped (its descriptors closed) and listed in
    /// [`take_refused`](Self::take_refused), and the rest go on. Any other error (the
    /// connection is gone) is returned.
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> Result<Flush> {
        while !self.frames.is_empty() {
            let (frames, attached, result) = {
                let next = self.next_send();
                let r = send_nonblocking(fd, &next.iov, &next.fds);
                (next.frames, !next.fds.is_empty(), r)
            };
            match result {
                Ok(n) => self.advance(n, attached, frames),
                Err(e) if e.errno() == Some(Errno::EAGAIN) => return Ok(Flush::WouldBlock),
                Err(e) if refuses_message(&e) && self.at_boundary() => {
                    if frames > 1 {
                        self.isolate = true; // find the one to blame
                    } else {
                        self.drop_front(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if self.shared.capacity() > RETAINED_CAPACITY {
            // A burst should not pin its peak in an idle channel.
            self.shared = Vec::with_capacity(RETAINED_CAPACITY);
        } else {
            self.shared.clear();
        }
        self.front_sent = 0;
        self.isolate = false;
        Ok(Flush::Done)
    }

    /// How many refused messages wait in [`take_refused`](Self::take_refused).
    pub fn refused_count(&self) -> usize {
        self.refused.len()
    }

    /// The messages the kernel refused since the last call, oldest first.
    pub fn take_refused(&mut self) -> Vec<Refused> {
        std::mem::take(&mut self.refused)
    }

    /// The sequence number of the oldest message not yet completely written, if any:
    /// every message sent before it has been handed to the kernel whole.
    pub fn oldest_unwritten(&self) -> Option<u64> {
        self.frames.front().map(|q| q.id)
    }

    /// Drops every frame that has not begun to go out, keeping only the rest of a frame
    /// that is partly written (so that what the peer has already received of it can be
    /// completed: closing must never cut a frame in half). Returns whether anything is
    /// left to write.
    pub fn keep_only_started(&mut self) -> bool {
        let started = !self.at_boundary();
        let keep = usize::from(started && !self.frames.is_empty());
        while self.frames.len() > keep {
            if let Some(q) = self.frames.pop_back() {
                self.held_fds -= q.fds.len();
                self.queued -= q.len();
            }
        }
        if let Some(Queued {
            bytes: Bytes::Shared { end, .. },
            ..
        }) = self.frames.front()
        {
            self.shared.truncate(*end);
        }
        if self.frames.is_empty() {
            self.front_sent = 0;
        }
        !self.frames.is_empty()
    }

    /// Whether the next byte to write begins a frame.
    fn at_boundary(&self) -> bool {
        self.front_sent == 0 && !self.frames.front().is_some_and(|q| q.partial)
    }

    /// Removes the front frame, unwritten, and records why.
    fn drop_front(&mut self, error: Error) {
        if let Some(q) = self.frames.pop_front() {
            self.held_fds -= q.fds.len();
            self.queued -= q.len() - self.front_sent;
            self.front_sent = 0;
            self.refused.push(Refused { id: q.id, error });
        }
        self.isolate = false;
    }

    /// What the next sendmsg carries (see [`NextSend`]).
    fn next_send(&self) -> NextSend<'_> {
        let at_boundary = self.at_boundary();
        let mut next = NextSend {
            iov: Vec::new(),
            frames: 0,
            fds: Vec::new(),
        };
        let mut bytes = 0;
        // The end of the last shared range, to merge adjacent ones into one iovec.
        let mut shared_end = None;
        for (i, q) in self.frames.iter().enumerate() {
            let unsent_fds = !q.fds_sent && !q.fds.is_empty();
            if unsent_fds {
                // Descriptors only on a send that starts at a frame boundary.
                if !at_boundary || next.fds.len() + q.fds.len() > MAX_FDS_PER_MESSAGE {
                    break;
                }
            }
            if next.iov.len() >= MAX_IOVECS {
                break;
            }
            if unsent_fds {
                next.fds.extend(q.fds.iter().map(|f| f.as_fd()));
            }
            let skip = if i == 0 { self.front_sent } else { 0 };
            let slice = &q.slice(&self.shared)[skip..];
            match (&q.bytes, shared_end, next.iov.last_mut()) {
                (Bytes::Shared { start, end }, Some(prev), Some(last)) if prev == *start => {
                    let from = *start - last.len();
                    *last = IoSlice::new(&self.shared[from..*end]);
                    shared_end = Some(*end);
                }
                (Bytes::Shared { end, .. }, _, _) => {
                    next.iov.push(IoSlice::new(slice));
                    shared_end = Some(*end);
                }
                (Bytes::Own(_), _, _) => {
                    next.iov.push(IoSlice::new(slice));
                    shared_end = None;
                }
            }
            bytes += slice.len();
            next.frames += 1;
            if self.record || self.isolate {
                break; // one record per sendmsg; one frame while looking for a refusal
            }
            // Keep one sendmsg to a sane size; the kernel takes what it can anyway.
            if bytes >= MAX_BATCH_BYTES && i > 0 {
                break;
            }
        }
        next
    }

    /// Accounts for `n` bytes written by a send that began or continued `frames`
    /// frames.
    fn advance(&mut self, mut n: usize, attached: bool, frames: usize) {
        // A send that carried descriptors gave them all to the kernel with its first
        // byte: every frame it began has its descriptors sent.
        if attached && n > 0 {
            for q in self.frames.iter_mut().take(frames) {
                q.fds_sent = true;
            }
        }
        self.queued -= n;
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                break;
            }
            n -= left;
            self.front_sent = 0;
            self.held_fds -= front.fds.len();
            self.frames.pop_front(); // closes our duplicates of its descriptors
        }
    }

    /// Drops the written front of the shared buffer once it is the larger part.
    fn compact(&mut self) {
        let cut = self
            .frames
            .iter()
            .find_map(|q| match q.bytes {
                Bytes::Shared { start, .. } => Some(start),
                Bytes::Own(_) => None,
            })
            .unwrap_or(self.shared.len());
        if cut > 0 && cut >= self.shared.len() / 2 {
            self.shared.drain(..cut);
            for q in self.frames.iter_mut() {
                if let Bytes::Shared { start, end } = &mut q.bytes {
                    *start -= cut;
                    *end -= cut;
                }
            }
        }
    }
}

/// The shared buffer capacity an emptied queue keeps for the next burst.
const RETAINED_CAPACITY: usize = 256 << 10;

/// Past this many bytes a send stops taking more frames (one sendmsg need not carry
/// everything; the next iteration sends the rest).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Whether a send error is about what one message carries rather than the connection:
/// EINVAL (a descriptor the kernel will not pass, such as an io_uring instance),
/// ETOOMANYREFS (descriptors nested too deep in flight), EMSGSIZE (a record too large).
fn refuses_message(e: &Error) -> bool {
    matches!(e, Error::MessageTooLarge { .. })
        || matches!(e.errno(), Some(Errno::EINVAL) | Some(Errno::ETOOMANYREFS))
}

/// Duplicates a caller's descriptor (close-on-exec) so that a queued frame owns its own.
pub fn dup_for_queue(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned().map_err(|e| {
        Error::os(
            "fcntl(F_DUPFD_CLOEXEC)",
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameDecoder, Message, MAX_PAYLOAD};
    use crate::msg::{recv_with_fds, send_with_fds};
    use crate::socket::{set_nonblocking, socketpair, PairOptions, SocketKind};
    use crate::testutil::{fd_inode, open_fd_count, temp_file_with};

    #[test]
    fn descriptors_never_ride_the_rest_of_a_frame() {
        // The first 4 bytes of a 10-byte frame went out directly (with its descriptors);
        // the next frame's descriptors must wait for a send that begins at its header.
        let file = temp_file_with(b"x");
        let mut q = WriteQueue::new();
        q.push_rest(FrameHeader::new(10, 1), &[7u8; 10], 4, 0);
        q.push(
            FrameHeader::new(1, 1),
            b"y",
            vec![dup_for_queue(file.as_fd()).unwrap()],
            0,
        );
        let next = q.next_send();
        assert_eq!(next.frames, 1, "the first send stops at the boundary");
        assert_eq!(
            next.iov.iter().map(|s| s.len()).sum::<usize>(),
            HEADER_LEN + 10 - 4
        );
        assert!(next.fds.is_empty());
        // Once the rest is written, the second frame starts a send, with its descriptor.
        q.advance(HEADER_LEN + 10 - 4, false, 1);
        let next = q.next_send();
        assert_eq!((next.frames, next.fds.len()), (1, 1));
        assert_eq!(
            next.iov.iter().map(|s| s.len()).sum::<usize>(),
            HEADER_LEN + 1
        );
    }

    #[test]
    fn small_frames_share_one_iovec_and_a_large_one_is_sent_from_its_own_buffer() {
        let mut q = WriteQueue::new();
        q.push(FrameHeader::new(3, 0), b"abc", Vec::new(), 0);
        q.push(FrameHeader::new(2, 0), b"de", Vec::new(), 1);
        let big = vec![9u8; OWN_FRAME_BYTES];
        q.push(FrameHeader::new(big.len() as u32, 0), &big, Vec::new(), 2);
        q.push(FrameHeader::new(1, 0), b"f", Vec::new(), 3);
        assert!(
            matches!(q.frames[2].bytes, Bytes::Own(ref v) if v.len() == HEADER_LEN + big.len())
        );
        let next = q.next_send();
        let lens: Vec<usize> = next.iov.iter().map(|s| s.len()).collect();
        assert_eq!(
            lens,
            vec![2 * HEADER_LEN + 5, HEADER_LEN + big.len(), HEADER_LEN + 1]
        );
        assert_eq!(next.frames, 4);
        let (a, b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
        set_nonblocking(a.as_fd(), true).unwrap();
        let got = std::thread::scope(|s| {
            let r = s.spawn(|| read_all(b.as_fd(), 4));
            while q.flush(a.as_fd()).unwrap() == Flush::WouldBlock {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            r.join().unwrap()
        });
        let data: Vec<&[u8]> = got.iter().map(|m| &m.data[..]).collect();
        assert_eq!(data, vec![&b"abc"[..], b"de", &big, b"f"]);
        assert_eq!(q.queued_bytes(), 0);
    }

    fn read_all(fd: BorrowedFd<'_>, count: usize) -> Vec<Message> {
        let mut d = FrameDecoder::new(MAX_PAYLOAD);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while out.len() < count {
            let mut fds = Vec::new();
            let r = recv_with_fds(fd, &mut buf, MAX_FDS_PER_MESSAGE, &mut fds).unwrap();
            assert!(r.bytes > 0);
            d.push(&buf[..r.bytes], fds, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn coalesces_frames_and_their_fds_into_one_send() {
        let base = open_fd_count();
        {
            let (a, b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
            let files: Vec<OwnedFd> = (0..5).map(|_| temp_file_with(b"")).collect();
            let ids: Vec<_> = files.iter().map(fd_inode).collect();
            let mut q = WriteQueue::new();
            let mut it = files.into_iter();
            for i in 0..5 {
                let fds: Vec<OwnedFd> = it.by_ref().take([1, 0, 2, 0, 2][i]).collect();
                let h = FrameHeader::new(3, fds.len() as u16);
                q.push(h, format!("m{i}!").as_bytes(), fds, 0);
            }
            assert_eq!(q.flush(a.as_fd()).unwrap(), Flush::Done);
            assert!(q.is_empty() && q.queued_bytes() == 0);
            // One recv gets all five frames and all five fds: it was one sendmsg.
            let mut buf = vec![0u8; 4096];
            let mut fds = Vec::new();
            let r = recv_with_fds(b.as_fd(), &mut buf, 253, &mut fds).unwrap();
            assert_eq!(r.bytes, 5 * 11);
            assert_eq!(r.fds, 5);
            let got: Vec<_> = fds.iter().map(fd_inode).collect();
            assert_eq!(got, ids);
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn full_socket_then_drain_delivers_everything_once() {
        let base = open_fd_count();
        {
            let (a, b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
            set_nonblocking(a.as_fd(), true).unwrap();
            let mut q = WriteQueue::new();
            let mut want = Vec::new();
            // Far more than the socket buffer, with fds sprinkled through it.
            for i in 0..400usize {
                let payload = vec![(i % 251) as u8; 3000 + i];
                let fds: Vec<OwnedFd> = if i % 7 == 0 {
                    vec![temp_file_with(format!("{i}").as_bytes())]
                } else {
                    Vec::new()
                };
                want.push((
                    payload.clone(),
                    fds.iter().map(fd_inode).collect::<Vec<_>>(),
                ));
                q.push(
                    FrameHeader::new(payload.len() as u32, fds.len() as u16),
                    &payload,
                    fds,
                    0,
                );
            }
            assert_eq!(q.flush(a.as_fd()).unwrap(), Flush::WouldBlock);
            let got = std::thread::scope(|s| {
                let r = s.spawn(|| read_all(b.as_fd(), 400));
                // (The first flush above already hit a full socket; how many more it
                // takes depends on the reader thread's timing, so it is not asserted.)
                while q.flush(a.as_fd()).unwrap() == Flush::WouldBlock {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                r.join().unwrap()
            });
            assert_eq!(got.len(), 400);
            for (i, (m, (payload, ids))) in got.iter().zip(&want).enumerate() {
                assert_eq!(&m.data, payload, "payload {i}");
                assert_eq!(
                    &m.fds.iter().map(fd_inode).collect::<Vec<_>>(),
                    ids,
                    "fds {i}"
                );
            }
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn rest_of_a_direct_send_goes_without_fds() {
        let (a, b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
        let mut q = WriteQueue::new();
        let payload = b"0123456789";
        // Pretend the header and 4 payload bytes (and the fds) went directly.
        let h = FrameHeader::new(10, 0);
        send_with_fds(
            a.as_fd(),
            &[IoSlice::new(&h.encode()), IoSlice::new(&payload[..4])],
            &[],
        )
        .unwrap();
        q.push_rest(h, payload, HEADER_LEN + 4, 0);
        assert_eq!(q.queued_bytes(), 6);
        assert_eq!(q.flush(a.as_fd()).unwrap(), Flush::Done);
        let got = read_all(b.as_fd(), 1);
        assert_eq!(got[0].data, payload);
    }

    #[test]
    fn pushing_while_the_front_frame_is_partly_written_keeps_the_bookkeeping() {
        // Found by the soak: a frame pushed while most of the buffer is a partly written
        // front frame used to underflow the boundary offset (a panic in debug builds).
        let base = open_fd_count();
        {
            let (a, b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
            set_nonblocking(a.as_fd(), true).unwrap();
            let file = temp_file_with(b"second");
            let mut q = WriteQueue::new();
            q.push(FrameHeader::new(8, 0), b"written!", Vec::new(), 0);
            assert_eq!(q.flush(a.as_fd()).unwrap(), Flush::Done);
            let big = vec![5u8; 300 << 10];
            q.push(FrameHeader::new(big.len() as u32, 0), &big, Vec::new(), 0);
            assert_eq!(q.flush(a.as_fd()).unwrap(), Flush::WouldBlock);
            assert!(q.front_sent > 0, "the front frame is partly written");
            q.push(
                FrameHeader::new(6, 1),
                b"second",
                vec![dup_for_queue(file.as_fd()).unwrap()],
                0,
            );
            let got = std::thread::scope(|s| {
                let r = s.spawn(|| read_all(b.as_fd(), 3));
                while q.flush(a.as_fd()).unwrap() == Flush::WouldBlock {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                r.join().unwrap()
            });
            assert_eq!(got[0].data, b"written!");
            assert!(got[1].data == big && got[1].fds.is_empty());
            assert_eq!(got[2].data, b"second");
            assert_eq!(fd_inode(&got[2].fds[0]), fd_inode(&file));
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn an_emptied_queue_gives_back_the_memory_of_a_burst() {
        // The soak's RSS grew with every channel's largest burst until this.
        let (a, b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
        set_nonblocking(a.as_fd(), true).unwrap();
        let mut q = WriteQueue::new();
        for _ in 0..4000 {
            q.push(FrameHeader::new(1000, 0), &[1u8; 1000], Vec::new(), 0);
        }
        assert!(q.shared.capacity() >= 4000 * 1000);
        std::thread::scope(|s| {
            let r = s.spawn(|| read_all(b.as_fd(), 4000));
            while q.flush(a.as_fd()).unwrap() == Flush::WouldBlock {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            assert_eq!(r.join().unwrap().len(), 4000);
        });
        assert!(q.shared.capacity() <= RETAINED_CAPACITY);
    }
}
