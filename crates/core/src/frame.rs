//! The wire format of stream channels (PROTOCOL.md): an 8-byte header, then the payload;
//! a frame's descriptors ride on the sendmsg that carries the frame's first byte.
//!
//! ```text
//! bytes 0-3  payload length, u32 little-endian
//! bytes 4-5  number of descriptors carried, u16 little-endian
//! byte  6    version (1)
//! byte  7    flags (0; reserved)
//! ```
//!
//! The decoder keeps the bytes and the descriptors apart, as libwayland does: every
//! descriptor that arrives goes into a FIFO [`FdQueue`], owned at once, and a complete
//! header takes exactly the number of descriptors it declares from the front. That is
//! correct whatever the kernel does with read boundaries.
//!
//! ```
//! use socketpair_core::frame::{FrameDecoder, FrameHeader};
//! let mut wire = FrameHeader::new(5, 0).encode().to_vec();
//! wire.extend_from_slice(b"hello");
//! let mut decoder = FrameDecoder::new(1 << 20);
//! let mut out = Vec::new();
//! decoder.push(&wire[..3], Vec::new(), &mut out).unwrap(); // any split works
//! decoder.push(&wire[3..], Vec::new(), &mut out).unwrap();
//! assert_eq!(out[0].data, b"hello");
//! ```

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::msg::MAX_FDS_PER_MESSAGE;

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 8;
/// The only version this implementation speaks.
pub const VERSION: u8 = 1;
/// The largest payload the format can describe (u32).
pub const MAX_PAYLOAD: usize = u32::MAX as usize;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Descriptors carried by this frame.
    pub nfds: u16,
}

impl FrameHeader {
    pub fn new(len: u32, nfds: u16) -> Self {
        FrameHeader { len, nfds }
    }

    /// A header for a payload of `len` bytes with `nfds` descriptors, checked against the
    /// format's and the caller's limits.
    pub fn for_message(len: usize, nfds: usize, max_message_bytes: usize) -> Result<Self> {
        let max = max_message_bytes.min(MAX_PAYLOAD);
        if len > max {
            return Err(Error::MessageTooLarge {
                len,
                max: Some(max),
            });
        }
        if nfds > MAX_FDS_PER_MESSAGE {
            return Err(Error::TooManyFds {
                count: nfds,
                max: MAX_FDS_PER_MESSAGE,
            });
        }
        // Both fit: len <= u32::MAX and nfds <= 253.
        Ok(FrameHeader::new(len as u32, nfds as u16))
    }

    /// The 8 bytes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let l = self.len.to_le_bytes();
        let n = self.nfds.to_le_bytes();
        [l[0], l[1], l[2], l[3], n[0], n[1], VERSION, 0]
    }

    /// Parses and validates 8 bytes from the wire.
    pub fn decode(bytes: &[u8; HEADER_LEN], max_message_bytes: usize) -> Result<Self> {
        if bytes[6] != VERSION {
            return Err(Error::Protocol(format!(
                "frame header has version {}, this side speaks version {VERSION}",
                bytes[6]
            )));
        }
        if bytes[7] != 0 {
            return Err(Error::Protocol(format!(
                "frame header has reserved flags 0x{:02x} set",
                bytes[7]
            )));
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let nfds = u16::from_le_bytes([bytes[4], bytes[5]]);
        if len as usize > max_message_bytes {
            return Err(Error::Protocol(format!(
                "frame of {len} bytes exceeds this channel's limit of {max_message_bytes} bytes"
            )));
        }
        if nfds as usize > MAX_FDS_PER_MESSAGE {
            return Err(Error::Protocol(format!(
                "frame declares {nfds} descriptors, more than the limit of {MAX_FDS_PER_MESSAGE}"
            )));
        }
        Ok(FrameHeader { len, nfds })
    }
}

/// One decoded message: its payload and exactly the descriptors its header declared, in
/// the order they were sent. The receiver owns the descriptors.
#[derive(Debug)]
pub struct Message {
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Received descriptors waiting for the frame that claims them, each tagged with the
/// receive ("batch") it arrived in.
#[derive(Debug, Default)]
pub struct FdQueue {
    fds: VecDeque<(u64, OwnedFd)>,
}

impl FdQueue {
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    fn push_batch(&mut self, batch: u64, fds: Vec<OwnedFd>) {
        self.fds.extend(fds.into_iter().map(|fd| (batch, fd)));
    }

    /// Takes `n` descriptors from the front, which must all come from one batch (one
    /// sendmsg carries all of a frame's descriptors), and names that batch (`None` for
    /// `n == 0`).
    fn take(&mut self, n: usize) -> Result<(Vec<OwnedFd>, Option<u64>)> {
        if self.fds.len() < n {
            return Err(Error::Protocol(format!(
                "frame declares {n} descriptors but only {} arrived with it",
                self.fds.len()
            )));
        }
        let first_batch = self.fds.front().map(|(b, _)| *b);
        let taken: Vec<(u64, OwnedFd)> = self.fds.drain(..n).collect();
        if taken.iter().any(|(b, _)| Some(*b) != first_batch) {
            return Err(Error::Protocol(
                "a frame's descriptors arrived in two different sends".into(),
            ));
        }
        let batch = if n == 0 { None } else { first_batch };
        Ok((taken.into_iter().map(|(_, fd)| fd).collect(), batch))
    }

    fn any_older_than(&self, batch: u64) -> usize {
        self.fds.iter().filter(|(b, _)| *b < batch).count()
    }

    fn clear(&mut self) {
        self.fds.clear(); // dropping the OwnedFds closes them
    }
}

#[derive(Debug)]
enum State<B> {
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
    },
    /// A payload that arrives over several receives, assembled in its own buffer.
    Payload {
        have: usize,
        data: B,
        fds: Vec<OwnedFd>,
    },
}

impl<B> State<B> {
    fn start() -> Self {
        State::Header {
            buf: [0; HEADER_LEN],
            have: 0,
        }
    }
}

/// Where decoded messages go. A message whose payload lies whole in one receive's bytes
/// is handed over as a slice of them ([`complete`](Sink::complete): the sink copies it
/// once, wherever it wants it); a payload that spans receives is assembled in a buffer
/// the sink provides when its header arrives ([`alloc`](Sink::alloc)), which later
/// receives may fill directly ([`FrameDecoder::payload_buffer`]). No payload byte is
/// copied twice by the decoder.
///
/// `Vec<Message>` is a sink whose messages own their bytes.
pub trait Sink {
    /// The buffer a payload that spans receives is assembled in.
    type Buf: AsMut<[u8]>;

    /// A buffer of exactly `len` bytes (any contents: every byte is written before the
    /// message is handed back through [`assembled`](Sink::assembled)).
    fn alloc(&mut self, len: usize) -> Result<Self::Buf>;

    /// A message whose payload lies whole in one receive. `following` more bytes of that
    /// receive come after it (a hint: further messages may follow).
    fn complete(&mut self, data: &[u8], fds: Vec<OwnedFd>, following: usize) -> Result<()>;

    /// A message assembled in a buffer from [`alloc`](Sink::alloc).
    fn assembled(&mut self, data: Self::Buf, fds: Vec<OwnedFd>) -> Result<()>;

    /// How many messages the sink holds.
    fn count(&self) -> usize;

    /// Takes back every message after the first `count` (their descriptors close).
    fn truncate(&mut self, count: usize);
}

impl Sink for Vec<Message> {
    type Buf = Vec<u8>;

    fn alloc(&mut self, len: usize) -> Result<Vec<u8>> {
        // Zeroed memory from the allocator (calloc): a large buffer's pages are only
        // committed as the payload's bytes are written.
        Ok(vec![0; len])
    }

    fn complete(&mut self, data: &[u8], fds: Vec<OwnedFd>, _following: usize) -> Result<()> {
        self.push(Message {
            data: data.to_vec(),
            fds,
        });
        Ok(())
    }

    fn assembled(&mut self, data: Vec<u8>, fds: Vec<OwnedFd>) -> Result<()> {
        self.push(Message { data, fds });
        Ok(())
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn truncate(&mut self, count: usize) {
        Vec::truncate(self, count);
    }
}

/// Incremental decoder: feed it whatever each receive returned — bytes and descriptors —
/// and it hands a [`Sink`] whole messages with exactly their descriptors.
///
/// Guarantees: every descriptor handed in is either delivered with its message or
/// closed; after an error the decoder holds nothing and every later call fails. A
/// payload that spans receives gets its buffer (from the sink) when its header arrives;
/// the length is checked against the limit first.
#[derive(Debug)]
pub struct FrameDecoder<B = Vec<u8>> {
    max_message_bytes: usize,
    state: State<B>,
    fds: FdQueue,
    batch: u64,
    failed: bool,
}

/// The header that began last (its first byte was) in one receive's bytes, for the
/// checks in [`FrameDecoder::check_new_batch`]; decoding a receive in which no header
/// began yields `None`.
#[derive(Debug)]
enum LastHeader {
    /// Its 8 bytes are not all here yet.
    Pending,
    /// Complete: the batch its descriptors came from, and where its message went in
    /// the sink if it is complete too.
    Claimed {
        batch: Option<u64>,
        delivered_at: Option<usize>,
    },
}

impl<B: AsMut<[u8]>> FrameDecoder<B> {
    /// A decoder that rejects frames whose payload exceeds `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        FrameDecoder {
            max_message_bytes: max_message_bytes.min(MAX_PAYLOAD),
            state: State::start(),
            fds: FdQueue::default(),
            batch: 0,
            failed: false,
        }
    }

    /// Descriptors received and not yet claimed by a frame.
    pub fn queued_fds(&self) -> usize {
        self.fds.len()
    }

    /// True when no partial frame and no descriptor is pending.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. }) && self.fds.is_empty()
    }

    /// Feeds one receive's worth: `bytes` and the descriptors that came with them.
    /// Complete messages go to `sink`, in order. On a protocol error, the messages
    /// completed before it are still in the sink, everything queued is closed and the
    /// error is returned.
    pub fn push<S: Sink<Buf = B>>(
        &mut self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
        sink: &mut S,
    ) -> Result<()> {
        if self.failed {
            return Err(Error::Protocol("the stream already failed".into()));
        }
        let new_batch = self.take_batch(fds, !bytes.is_empty())?;
        let last = match self.decode(bytes, sink) {
            Ok(last) => last,
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        if new_batch {
            self.check_new_batch(last, sink)?;
        }
        Ok(())
    }

    /// While a payload that spans receives is being assembled: the part of its buffer
    /// still to be filled. Receive into (the start of) it, then call
    /// [`payload_received`](Self::payload_received) with the count.
    pub fn payload_buffer(&mut self) -> Option<&mut [u8]> {
        match &mut self.state {
            State::Payload { have, data, .. } if !self.failed => {
                let have = *have;
                data.as_mut().get_mut(have..)
            }
            _ => None,
        }
    }

    /// After `n` bytes were received into [`payload_buffer`](Self::payload_buffer) by a
    /// receive that also brought `fds`: completes the message if it is whole.
    pub fn payload_received<S: Sink<Buf = B>>(
        &mut self,
        n: usize,
        fds: Vec<OwnedFd>,
        sink: &mut S,
    ) -> Result<()> {
        if self.failed {
            return Err(Error::Protocol("the stream already failed".into()));
        }
        let new_batch = self.take_batch(fds, n > 0)?;
        if new_batch {
            // These bytes are all inside one payload: no header began in them.
            return self.check_new_batch(None, sink);
        }
        if let State::Payload { have, data, .. } = &mut self.state {
            *have = (*have + n).min(data.as_mut().len());
            if *have == data.as_mut().len() {
                if let State::Payload { data, fds, .. } =
                    std::mem::replace(&mut self.state, State::start())
                {
                    if let Err(e) = sink.assembled(data, fds) {
                        self.reset();
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues a receive's descriptors as a new batch; true if there were any.
    fn take_batch(&mut self, fds: Vec<OwnedFd>, with_bytes: bool) -> Result<bool> {
        if fds.is_empty() {
            return Ok(false);
        }
        if !with_bytes {
            drop(fds);
            return self
                .fail("descriptors arrived without any data".into())
                .map(|_| false);
        }
        self.batch += 1;
        self.fds.push_batch(self.batch, fds);
        Ok(true)
    }

    /// The checks for a receive that brought a new batch of descriptors (PROTOCOL.md,
    /// "Receiving"). A sender attaches descriptors only to a sendmsg that begins at a
    /// frame boundary, and every kernel hands them over with a receive that contains
    /// that sendmsg's first byte (Linux may glue earlier bytes in front of it; the BSDs
    /// start the receive there). So in that receive:
    ///
    /// 1. some header began: descriptors never arrive in the middle of a frame;
    /// 2. the header that began last is at or after the sendmsg's start, so it may not
    ///    take descriptors that came earlier: if it does, the peer sent more descriptors
    ///    before than its headers declared, and this frame is not delivered with them;
    /// 3. after it, every older batch has been claimed (a header still incomplete at the
    ///    end of the receive began at or after the sendmsg's start too, so it may not
    ///    claim them later either).
    fn check_new_batch<S: Sink<Buf = B>>(
        &mut self,
        last: Option<LastHeader>,
        sink: &mut S,
    ) -> Result<()> {
        match last {
            None => {
                return self.fail(
                    "descriptors arrived in the middle of a frame (a send that carries \
                     descriptors must begin at a frame boundary)"
                        .into(),
                );
            }
            Some(LastHeader::Claimed {
                batch: Some(b),
                delivered_at,
            }) if b < self.batch => {
                if let Some(at) = delivered_at {
                    sink.truncate(at); // closes the descriptors it took
                }
                return self.fail(
                    "a frame that began in a send carrying descriptors would take descriptors \
                     from an earlier send (the peer sent more descriptors than its headers \
                     declared)"
                        .into(),
                );
            }
            _ => {}
        }
        let stale = self.fds.any_older_than(self.batch);
        if stale > 0 {
            return self.fail(format!(
                "{stale} descriptors arrived that no frame claimed (the peer sent more \
                 descriptors than its headers declared)"
            ));
        }
        Ok(())
    }

    /// Call at end of stream: anything pending is a protocol error (and is closed).
    pub fn finish(&mut self) -> Result<()> {
        if self.failed {
            return Ok(());
        }
        let partial = match &mut self.state {
            State::Header { have: 0, .. } => None,
            State::Header { have, .. } => Some(format!("{have} of {HEADER_LEN} header bytes")),
            State::Payload { have, data, .. } => {
                Some(format!("{have} of {} payload bytes", data.as_mut().len()))
            }
        };
        if let Some(what) = partial {
            return self.fail(format!(
                "the peer closed the stream in the middle of a frame ({what})"
            ));
        }
        if !self.fds.is_empty() {
            let n = self.fds.len();
            return self.fail(format!("{n} descriptors arrived that no frame claimed"));
        }
        Ok(())
    }

    fn decode<S: Sink<Buf = B>>(
        &mut self,
        mut input: &[u8],
        sink: &mut S,
    ) -> Result<Option<LastHeader>> {
        let mut last = None;
        while !input.is_empty() {
            match &mut self.state {
                State::Header { buf, have } => {
                    if *have == 0 {
                        last = Some(LastHeader::Pending);
                    }
                    let take = (HEADER_LEN - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    input = &input[take..];
                    if *have < HEADER_LEN {
                        continue;
                    }
                    let header = FrameHeader::decode(buf, self.max_message_bytes)?;
                    self.state = State::start();
                    let (fds, batch) = self.fds.take(header.nfds as usize)?;
                    if matches!(last, Some(LastHeader::Pending)) {
                        last = Some(LastHeader::Claimed {
                            batch,
                            delivered_at: None,
                        });
                    }
                    let len = header.len as usize;
                    if len <= input.len() {
                        // The whole payload is here: the sink copies it from the input.
                        mark_delivered(&mut last, sink.count());
                        sink.complete(&input[..len], fds, input.len() - len)?;
                        input = &input[len..];
                    } else {
                        // It spans receives: its own buffer now, filled as bytes come.
                        let mut data = sink.alloc(len)?;
                        let have = input.len();
                        match data.as_mut().get_mut(..have) {
                            Some(dst) => dst.copy_from_slice(input),
                            None => {
                                return Err(Error::Protocol(
                                    "the buffer for a payload is shorter than the payload".into(),
                                ))
                            }
                        }
                        input = &[];
                        self.state = State::Payload { have, data, fds };
                    }
                }
                State::Payload { have, data, .. } => {
                    let buf = data.as_mut();
                    let take = (buf.len() - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    input = &input[take..];
                    if *have == buf.len() {
                        if let State::Payload { data, fds, .. } =
                            std::mem::replace(&mut self.state, State::start())
                        {
                            mark_delivered(&mut last, sink.count());
                            sink.assembled(data, fds)?;
                        }
                    }
                }
            }
        }
        Ok(last)
    }

    fn fail(&mut self, what: String) -> Result<()> {
        self.reset();
        Err(Error::Protocol(what))
    }

    fn reset(&mut self) {
        self.failed = true;
        self.fds.clear();
        self.state = State::start(); // drops a partial payload and its descriptors
    }
}

/// The message at `at` in the sink completes the frame whose header began last in this
/// receive, if that header completed in it too.
fn mark_delivered(last: &mut Option<LastHeader>, at: usize) {
    if let Some(LastHeader::Claimed { delivered_at, .. }) = last {
        if delivered_at.is_none() {
            *delivered_at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fd_inode, open_fd_count, temp_file_with};

    fn frame(payload: &[u8], nfds: u16) -> Vec<u8> {
        let mut v = FrameHeader::new(payload.len() as u32, nfds)
            .encode()
            .to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_round_trips() {
        let h = FrameHeader::new(0xdead_beef, 253);
        assert_eq!(h.encode(), [0xef, 0xbe, 0xad, 0xde, 253, 0, 1, 0]);
        assert_eq!(FrameHeader::decode(&h.encode(), MAX_PAYLOAD).unwrap(), h);
    }

    #[test]
    fn for_message_checks_limits() {
        assert_eq!(
            FrameHeader::for_message(11, 0, 10).unwrap_err().code(),
            "ERR_MESSAGE_TOO_LARGE"
        );
        assert_eq!(
            FrameHeader::for_message(1, 254, 10).unwrap_err().code(),
            "ERR_TOO_MANY_FDS"
        );
        assert_eq!(
            FrameHeader::for_message(10, 253, 10).unwrap(),
            FrameHeader::new(10, 253)
        );
    }

    #[test]
    fn byte_at_a_time_and_zero_length() {
        let mut wire = frame(b"", 0);
        wire.extend(frame(b"abc", 0));
        let mut d = FrameDecoder::new(100);
        let mut out = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b), Vec::new(), &mut out)
                .unwrap();
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, b"");
        assert_eq!(out[1].data, b"abc");
        assert!(d.is_idle());
        d.finish().unwrap();
    }

    #[test]
    fn fds_go_to_the_frame_that_declares_them() {
        let base = open_fd_count();
        {
            let files: Vec<OwnedFd> = (0..3).map(|_| temp_file_with(b"")).collect();
            let ids: Vec<_> = files.iter().map(fd_inode).collect();
            let mut wire = frame(b"a", 2);
            wire.extend(frame(b"b", 0));
            wire.extend(frame(b"c", 1));
            let mut d = FrameDecoder::new(100);
            let mut out = Vec::new();
            // All three frames went in one sendmsg, so all fds come with the first byte.
            d.push(&wire[..1], files, &mut out).unwrap();
            d.push(&wire[1..], Vec::new(), &mut out).unwrap();
            let got: Vec<Vec<_>> = out
                .iter()
                .map(|m| m.fds.iter().map(fd_inode).collect())
                .collect();
            assert_eq!(got, vec![vec![ids[0], ids[1]], vec![], vec![ids[2]]]);
        }
        assert_eq!(open_fd_count(), base);
    }

    fn expect_protocol_error(wire: &[u8], nfds: usize, needle: &str) {
        let base = open_fd_count();
        {
            let fds: Vec<OwnedFd> = (0..nfds).map(|_| temp_file_with(b"")).collect();
            let mut d = FrameDecoder::new(1024);
            let mut out = Vec::new();
            let r = d.push(wire, fds, &mut out).and_then(|_| d.finish());
            let err = r.unwrap_err();
            assert_eq!(err.code(), "ERR_PROTOCOL");
            assert!(err.to_string().contains(needle), "{err}");
            assert_eq!(d.queued_fds(), 0);
            assert!(d.push(b"x", Vec::new(), &mut out).is_err(), "stays failed");
        }
        assert_eq!(open_fd_count(), base, "every queued fd was closed");
    }

    #[test]
    fn hostile_bad_version() {
        let mut w = frame(b"x", 0);
        w[6] = 2;
        expect_protocol_error(&w, 0, "version 2");
    }

    #[test]
    fn hostile_reserved_flags() {
        let mut w = frame(b"x", 0);
        w[7] = 0x80;
        expect_protocol_error(&w, 0, "reserved flags");
    }

    /// A sink that records what it was asked for.
    #[derive(Default)]
    struct Recording {
        allocs: Vec<usize>,
        complete: Vec<(Vec<u8>, usize)>,
        assembled: Vec<Vec<u8>>,
    }

    impl Sink for Recording {
        type Buf = Vec<u8>;
        fn alloc(&mut self, len: usize) -> Result<Vec<u8>> {
            self.allocs.push(len);
            Ok(vec![0; len])
        }
        fn complete(&mut self, data: &[u8], _fds: Vec<OwnedFd>, following: usize) -> Result<()> {
            self.complete.push((data.to_vec(), following));
            Ok(())
        }
        fn assembled(&mut self, data: Vec<u8>, _fds: Vec<OwnedFd>) -> Result<()> {
            self.assembled.push(data);
            Ok(())
        }
        fn count(&self) -> usize {
            self.complete.len() + self.assembled.len()
        }
        fn truncate(&mut self, _count: usize) {}
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_any_buffer_is_asked_for() {
        let mut d = FrameDecoder::new(1000);
        let mut sink = Recording::default();
        let w = FrameHeader::new(1001, 0).encode();
        let err = d.push(&w, Vec::new(), &mut sink).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        assert!(sink.allocs.is_empty());
    }

    #[test]
    fn whole_payloads_are_lent_from_the_input_and_spanning_ones_get_one_buffer() {
        let mut wire = frame(b"one", 0);
        wire.extend(frame(b"two!", 0));
        wire.extend(frame(&[7u8; 100], 0));
        let mut d = FrameDecoder::new(1000);
        let mut sink = Recording::default();
        // The third payload is cut after 10 of its 100 bytes.
        let cut = 2 * HEADER_LEN + 7 + HEADER_LEN + 10;
        d.push(&wire[..cut], Vec::new(), &mut sink).unwrap();
        assert_eq!(
            sink.complete,
            vec![
                (b"one".to_vec(), cut - HEADER_LEN - 3),
                (b"two!".to_vec(), HEADER_LEN + 10)
            ]
        );
        assert_eq!(sink.allocs, vec![100]);
        // The rest goes straight into the payload's buffer.
        let rest = &wire[cut..];
        let dst = d.payload_buffer().unwrap();
        assert_eq!(dst.len(), 90);
        dst.copy_from_slice(rest);
        d.payload_received(rest.len(), Vec::new(), &mut sink)
            .unwrap();
        assert_eq!(sink.assembled, vec![vec![7u8; 100]]);
        assert!(d.is_idle());
        assert_eq!(sink.allocs, vec![100], "no second buffer");
    }

    #[test]
    fn hostile_too_many_fds_declared() {
        let w = FrameHeader::new(1, 254).encode();
        expect_protocol_error(&w, 0, "254 descriptors");
    }

    #[test]
    fn fewer_fds_than_declared() {
        expect_protocol_error(&frame(b"x", 3), 2, "only 2 arrived");
    }

    #[test]
    fn more_fds_than_declared_then_eof() {
        expect_protocol_error(&frame(b"x", 1), 3, "no frame claimed");
    }

    #[test]
    fn more_fds_than_declared_then_more_fds() {
        let base = open_fd_count();
        {
            let mut d = FrameDecoder::new(100);
            let mut out = Vec::new();
            let two: Vec<OwnedFd> = (0..2).map(|_| temp_file_with(b"")).collect();
            d.push(&frame(b"x", 1), two, &mut out).unwrap();
            // The next frame's two fds: the stale extra from the first send would have to
            // be one of them, and a frame's fds never span two sends.
            let two: Vec<OwnedFd> = (0..2).map(|_| temp_file_with(b"")).collect();
            let err = d.push(&frame(b"y", 2), two, &mut out).unwrap_err();
            assert_eq!(err.code(), "ERR_PROTOCOL");
            assert_eq!(out.len(), 1, "the first frame was fine");
            drop(out);
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn hostile_fds_without_data() {
        expect_protocol_error(b"", 2, "without any data");
    }

    #[test]
    fn hostile_eof_mid_header_and_mid_payload() {
        expect_protocol_error(&frame(b"abc", 0)[..5], 0, "5 of 8 header bytes");
        expect_protocol_error(&frame(b"abc", 1)[..10], 1, "2 of 3 payload bytes");
    }

    #[test]
    fn an_extra_fd_is_not_taken_by_the_next_sends_frame() {
        let base = open_fd_count();
        for split in [None, Some(1), Some(3), Some(8), Some(9)] {
            let mut d = FrameDecoder::new(100);
            let mut out = Vec::new();
            let two: Vec<OwnedFd> = (0..2).map(|_| temp_file_with(b"")).collect();
            let first = fd_inode(&two[0]);
            d.push(&frame(b"hi", 1), two, &mut out).unwrap();
            let next = frame(b"ok", 1);
            let one = vec![temp_file_with(b"")];
            let r = match split {
                None => d.push(&next, one, &mut out),
                Some(k) => d
                    .push(&next[..k], one, &mut out)
                    .and_then(|_| d.push(&next[k..], Vec::new(), &mut out)),
            };
            let err = r.unwrap_err();
            assert_eq!(err.code(), "ERR_PROTOCOL", "{split:?}");
            let why = err.to_string();
            assert!(
                why.contains("earlier send") || why.contains("no frame claimed"),
                "{split:?}: {why}"
            );
            assert_eq!(out.len(), 1, "{split:?}: the second frame is not delivered");
            assert_eq!(fd_inode(&out[0].fds[0]), first);
            assert_eq!(d.queued_fds(), 0);
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn hostile_fds_in_the_middle_of_a_frame() {
        let base = open_fd_count();
        {
            let w = frame(b"0123456789", 0);
            let mut d = FrameDecoder::new(100);
            let mut out = Vec::new();
            d.push(&w[..4], Vec::new(), &mut out).unwrap();
            let err = d
                .push(&w[4..9], vec![temp_file_with(b"")], &mut out)
                .unwrap_err();
            assert!(err.to_string().contains("middle of a frame"), "{err}");
            assert_eq!(d.queued_fds(), 0);
        }
        assert_eq!(open_fd_count(), base);
    }

    #[test]
    fn a_send_glued_behind_the_tail_of_the_previous_one_decodes() {
        // Linux may return the end of one send and the start of the next (with its
        // descriptors) in one receive; frames of the first send still take theirs.
        let base = open_fd_count();
        {
            let mut s1 = frame(b"one", 1);
            let one_len = s1.len();
            s1.extend(frame(b"two", 1));
            let s2 = frame(b"three", 1);
            let files: Vec<OwnedFd> = (0..3).map(|_| temp_file_with(b"")).collect();
            let ids: Vec<_> = files.iter().map(fd_inode).collect();
            let mut files = files.into_iter();
            let mut d = FrameDecoder::new(100);
            let mut out = Vec::new();
            let batch1: Vec<OwnedFd> = files.by_ref().take(2).collect();
            d.push(&s1[..one_len + 3], batch1, &mut out).unwrap();
            let mut rest = s1[one_len + 3..].to_vec();
            rest.extend(&s2);
            d.push(&rest, files.collect(), &mut out).unwrap();
            d.finish().unwrap();
            let got: Vec<_> = out.iter().map(|m| fd_inode(&m.fds[0])).collect();
            assert_eq!(got, ids);
        }
        assert_eq!(open_fd_count(), base);
    }
}
