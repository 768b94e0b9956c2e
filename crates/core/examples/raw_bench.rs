//! The raw baseline for `npm run bench`: what a C program does over a stream socketpair
//! between two processes, written against libc with nothing between it and the kernel.
//! It speaks the channel wire format (PROTOCOL.md: an 8-byte header, then the payload;
//! descriptors on the sendmsg that carries the header), so the receiver does the work a
//! channel does, and it gives its sockets the buffers a channel asks for
//! (`STREAM_SOCKET_BUFFER` through the same `raise_buffers`).
//!
//! ```text
//! raw_bench oneway <size> <count>          one-way: one write(2) per message
//! raw_bench fds <size> <count> <nfds>      one-way: one sendmsg(2) per message, with
//!                                          nfds descriptors (SCM_RIGHTS)
//! raw_bench pingpong <size> <count>        round trips: one write and one read per
//!                                          message on each side
//! ```
//!
//! Both sockets are blocking and nothing polls. The sender builds each frame in one
//! buffer (header written once, payload filled in place). The receiver reads up to 256 KiB
//! at a time and checks each message where it lies in that buffer; a payload that is
//! still missing at least 128 KiB is read straight into a message buffer, and after such
//! a message the next read asks for just its header, so that a stream of large messages
//! is never copied in user space.
//!
//! Every byte of every message is checked (the same content as benchmark/common.js:
//! the sequence number as a u32 little-endian, then a pseudo-random pattern from a
//! sequence-dependent offset), and in `fds` mode that every descriptor points at the file
//! sent (then it is closed). The receiver reports its verdict and peak RSS to the sender
//! over the socket, and the sender prints one JSON line:
//! `{"ok":true,"count":N,"seconds":S,"receiverMaxRssKiB":K,"sndbuf":B,"rcvbuf":B}`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

use socketpair_core::channel::STREAM_SOCKET_BUFFER;
use socketpair_core::socket::raise_buffers;

/// Frame header length (PROTOCOL.md).
const HEADER: usize = 8;
/// Bytes asked for per read.
const READ_BYTES: usize = 256 << 10;
/// A payload still missing at least this much is read straight into its own buffer.
const DIRECT_READ_BYTES: usize = 128 << 10;
/// Most descriptors one sendmsg may carry on Linux (SCM_MAX_FD).
const MAX_FDS: usize = 253;

// ---- message content: the same bytes as benchmark/common.js -------------------------

const OFFSETS: usize = 1 << 16;
const SEED: u32 = 0x9e37_79b9;

/// Where message `seq`'s content starts in the pattern (common.js: `offset`).
fn offset(seq: u32) -> usize {
    (seq.wrapping_mul(0x9e37_79b1) >> 16) as usize
}

/// The pattern's first `n` bytes: xorshift32 (common.js: `pattern`).
fn pattern(n: usize) -> Vec<u8> {
    let mut x = SEED;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Messages {
    size: usize,
    pattern: Vec<u8>,
}

impl Messages {
    fn new(size: usize) -> Self {
        Messages {
            size,
            pattern: pattern(OFFSETS + size + 8),
        }
    }

    /// Writes message `seq` into `buf` (exactly `size` bytes).
    fn fill(&self, buf: &mut [u8], seq: u32) {
        let head = self.size.min(4);
        buf[..head].copy_from_slice(&seq.to_le_bytes()[..head]);
        let o = offset(seq);
        buf[head..].copy_from_slice(&self.pattern[o..o + self.size - head]);
    }

    /// True when `data` is exactly message `seq`.
    fn check(&self, data: &[u8], seq: u32) -> bool {
        let head = self.size.min(4);
        let o = offset(seq);
        data.len() == self.size
            && data[..head] == seq.to_le_bytes()[..head]
            && data[head..] == self.pattern[o..o + self.size - head]
    }
}

// ---- system calls ---------------------------------------------------------------------

fn fail(what: &str) -> ! {
    panic!("{what}: {}", std::io::Error::last_os_error())
}

fn interrupted() -> bool {
    std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
}

/// Writes all of `bytes` (a blocking socket takes it in one call unless interrupted).
fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if interrupted() {
                continue;
            }
            fail("write");
        }
        bytes = &bytes[n as usize..];
    }
}

/// Control-buffer bytes for `n` descriptors.
fn fds_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `frame` with `fds` attached to its first byte (one sendmsg), then any rest.
/// `control` holds at least `fds_space(fds.len())` bytes.
fn send_with_fds(fd: RawFd, frame: &[u8], fds: &[RawFd], control: &mut [u64]) {
    let space = fds_space(fds.len());
    assert!(!fds.is_empty() && space <= std::mem::size_of_val(control));
    // SAFETY: msghdr is a plain C struct, all-zero is empty; the iovec and the control
    // buffer (8-byte aligned, large enough: asserted) outlive the call.
    let sent = unsafe {
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            fds.len(),
        );
        loop {
            let n = libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                break n as usize;
            }
            if !interrupted() {
                fail("sendmsg");
            }
        }
    };
    write_all(fd, &frame[sent..]);
}

/// recvmsg(2)'s state in `fds` mode: received descriptors not yet claimed by a header
/// (in order), and the control buffer.
struct FdQueue {
    queue: VecDeque<RawFd>,
    control: Vec<u64>,
}

/// One read into `dst`: read(2), or with `fds` recvmsg(2), queueing the descriptors
/// received. Returns the byte count; the end of the stream is an error here.
fn read_some(fd: RawFd, dst: &mut [u8], fds: Option<&mut FdQueue>) -> usize {
    let Some(fds) = fds else {
        loop {
            // SAFETY: `dst` is valid for writes of its length.
            let n = unsafe { libc::read(fd, dst.as_mut_ptr().cast(), dst.len()) };
            match n {
                0 => panic!("unexpected end of stream"),
                n if n > 0 => return n as usize,
                _ if interrupted() => continue,
                _ => fail("read"),
            }
        }
    };
    loop {
        // SAFETY: as in send_with_fds; the kernel writes at most msg_controllen bytes of
        // control data, and every descriptor it reports there is ours.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: dst.as_mut_ptr().cast(),
                iov_len: dst.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = fds.control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(fds.control.as_slice()) as _;
            let n = libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC);
            match n {
                0 => panic!("unexpected end of stream"),
                n if n > 0 => {
                    assert!(
                        msg.msg_flags & libc::MSG_CTRUNC == 0,
                        "descriptors truncated"
                    );
                    let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                    while !cmsg.is_null() {
                        if (*cmsg).cmsg_level == libc::SOL_SOCKET
                            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                        {
                            let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                            for i in 0..bytes / std::mem::size_of::<RawFd>() {
                                fds.queue.push_back(data.add(i).read_unaligned());
                            }
                        }
                        cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                    }
                    return n as usize;
                }
                _ if interrupted() => continue,
                _ => fail("recvmsg"),
            }
        }
    }
}

fn read_exact(fd: RawFd, buf: &mut [u8]) {
    let mut at = 0;
    while at < buf.len() {
        at += read_some(fd, &mut buf[at..], None);
    }
}

/// (device, inode) of a descriptor.
fn identity(fd: RawFd) -> (u64, u64) {
    // SAFETY: fstat fills a stat struct, for which all-zero is a valid value.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return (0, 0);
        }
        #[allow(clippy::unnecessary_cast)]
        (st.st_dev as u64, st.st_ino as u64)
    }
}

fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and forgets it.
    unsafe { libc::close(fd) };
}

fn peak_rss_kib() -> u64 {
    // SAFETY: getrusage fills a rusage struct, for which all-zero is a valid value.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss as u64
    }
}

fn socket_buffers(fd: RawFd) -> (i32, i32) {
    let get = |opt| {
        let mut v: libc::c_int = 0;
        let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int and its length.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut l,
            )
        };
        v
    };
    (get(libc::SO_SNDBUF), get(libc::SO_RCVBUF))
}

fn frame_header(len: usize, nfds: usize) -> [u8; HEADER] {
    let l = (len as u32).to_le_bytes();
    let n = (nfds as u16).to_le_bytes();
    [l[0], l[1], l[2], l[3], n[0], n[1], 1, 0]
}

// ---- the receiver's framing -----------------------------------------------------------

/// Reads frames out of large reads and hands each over where it lies.
struct Reader {
    fd: RawFd,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A large payload's own buffer, reused.
    big: Vec<u8>,
    /// After a large payload: read just the next header, so that a large payload after
    /// it goes straight into `big` too.
    header_only: bool,
    /// `fds` mode.
    fds: Option<FdQueue>,
}

/// Receives one message: its payload, the whole frame (header and payload) when it lies
/// in one piece, and its descriptors (closed after the call).
type OnMessage<'a> = dyn FnMut(&[u8], Option<&[u8]>, &[RawFd]) + 'a;

impl Reader {
    fn new(fd: RawFd, with_fds: bool) -> Self {
        Reader {
            fd,
            buf: vec![0; READ_BYTES],
            start: 0,
            end: 0,
            big: Vec::new(),
            header_only: false,
            fds: with_fds.then(|| FdQueue {
                queue: VecDeque::new(),
                control: vec![0u64; fds_space(MAX_FDS).div_ceil(8)],
            }),
        }
    }

    /// Hands the next `n` messages to `on`, in order.
    fn receive(&mut self, n: u32, on: &mut OnMessage<'_>) {
        let mut claimed: Vec<RawFd> = Vec::with_capacity(MAX_FDS);
        let mut got = 0;
        while got < n {
            // Every complete frame in the buffer, in place.
            while got < n && self.end - self.start >= HEADER {
                let h = &self.buf[self.start..self.start + HEADER];
                assert!(h[6] == 1 && h[7] == 0, "bad frame header");
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let nfds = u16::from_le_bytes([h[4], h[5]]) as usize;
                let have = self.end - self.start - HEADER;
                let direct = have < len
                    && (len - have >= DIRECT_READ_BYTES || HEADER + len > self.buf.len());
                if have < len && !direct {
                    break; // incomplete and small: read more
                }
                // The descriptors came with the header's first byte: they are queued.
                claimed.clear();
                if let Some(fds) = &mut self.fds {
                    assert!(fds.queue.len() >= nfds, "a frame's descriptors are missing");
                    claimed.extend(fds.queue.drain(..nfds));
                }
                if !direct {
                    let frame = &self.buf[self.start..self.start + HEADER + len];
                    on(&frame[HEADER..], Some(frame), &claimed);
                    self.start += HEADER + len;
                } else {
                    // Large: the rest goes straight into the message's own buffer.
                    if self.big.len() < len {
                        self.big.resize(len, 0);
                    }
                    self.big[..have].copy_from_slice(&self.buf[self.start + HEADER..self.end]);
                    self.start = 0;
                    self.end = 0;
                    let mut at = have;
                    while at < len {
                        at += read_some(self.fd, &mut self.big[at..len], self.fds.as_mut());
                    }
                    on(&self.big[..len], None, &claimed);
                    self.header_only = true;
                }
                for &fd in &claimed {
                    close(fd);
                }
                got += 1;
            }
            if got == n {
                break;
            }
            // Read more, first moving a partial frame to the front if the tail is short.
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.buf.len() - self.end < READ_BYTES / 4 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let want = if std::mem::take(&mut self.header_only) && self.end - self.start < HEADER {
                self.start + HEADER
            } else {
                self.buf.len()
            };
            self.end += read_some(self.fd, &mut self.buf[self.end..want], self.fds.as_mut());
        }
    }
}

// ---- the two processes ----------------------------------------------------------------

/// The child, one-way: receives and checks `count` messages, then reports
/// [ok, peak RSS in KiB as a u64 little-endian] to the sender.
fn receiver(fd: RawFd, msgs: &Messages, count: u32, nfds: usize, want: (u64, u64)) {
    let mut reader = Reader::new(fd, nfds > 0);
    write_all(fd, b"R"); // ready: the sender starts its clock
    let mut seq = 0u32;
    let mut ok = true;
    reader.receive(count, &mut |payload, _, fds| {
        ok &= msgs.check(payload, seq) && fds.len() == nfds;
        for &f in fds {
            ok &= identity(f) == want;
        }
        seq += 1;
    });
    let mut report = [0u8; 9];
    report[0] = ok as u8;
    report[1..].copy_from_slice(&peak_rss_kib().to_le_bytes());
    write_all(fd, &report);
}

/// The child, round trips: sends every message back as it came, one write each (the
/// sender checks every reply).
fn echoer(fd: RawFd, count: u32) {
    let mut reader = Reader::new(fd, false);
    write_all(fd, b"R");
    reader.receive(count, &mut |payload, frame, _| match frame {
        Some(frame) => write_all(fd, frame),
        None => {
            let mut out = frame_header(payload.len(), 0).to_vec();
            out.extend_from_slice(payload);
            write_all(fd, &out);
        }
    });
}

/// `BENCH_CORRUPT=<seq>[:<byte>]` (a self-test of the verification, as in driver.js):
/// the sender flips one bit of that byte (default: the last) of message `seq`.
fn corruption(size: usize) -> Option<(u32, usize)> {
    let spec = std::env::var("BENCH_CORRUPT").ok()?;
    let mut parts = spec.split(':');
    let seq = parts.next()?.parse().ok()?;
    let at = parts
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or(size.checked_sub(1)?);
    (at < size).then_some((seq, at))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("oneway");
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let count: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let nfds: usize = if mode == "fds" {
        args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1)
    } else {
        0
    };
    assert!(
        matches!(mode, "oneway" | "fds" | "pingpong"),
        "unknown mode {mode}"
    );
    assert!(nfds <= MAX_FDS);

    let mut pair = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into `pair`.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    if r != 0 {
        fail("socketpair");
    }
    let [a, b] = pair;
    for fd in pair {
        // SAFETY: `fd` stays open while borrowed.
        raise_buffers(unsafe { BorrowedFd::borrow_raw(fd) }, STREAM_SOCKET_BUFFER);
    }
    let (sndbuf, rcvbuf) = socket_buffers(a);
    let file = socketpair_core::testutil::temp_file_with(b"the file every descriptor points at");
    let want = identity(file.as_raw_fd());
    let msgs = Messages::new(size);

    // SAFETY: single-threaded; the child runs this program's own code and _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        fail("fork");
    }
    if child == 0 {
        close(a);
        if mode == "pingpong" {
            echoer(b, count);
        } else {
            receiver(b, &msgs, count, nfds, want);
        }
        // SAFETY: ends the child without running destructors the parent also runs.
        unsafe { libc::_exit(0) };
    }
    close(b);
    let fds: Vec<RawFd> = vec![file.as_raw_fd(); nfds];
    let mut control = vec![0u64; fds_space(nfds.max(1)).div_ceil(8)];
    let mut frame = vec![0u8; HEADER + size];
    frame[..HEADER].copy_from_slice(&frame_header(size, nfds));
    let mut reader = Reader::new(a, false);
    let corrupt = corruption(size);
    let mut ready = [0u8; 1];
    read_exact(a, &mut ready);

    let start = Instant::now();
    let mut ok = ready[0] == b'R';
    let mut receiver_rss = 0;
    if mode == "pingpong" {
        for seq in 0..count {
            msgs.fill(&mut frame[HEADER..], seq);
            if corrupt.is_some_and(|(s, _)| s == seq) {
                frame[HEADER + corrupt.unwrap().1] ^= 0x20;
            }
            write_all(a, &frame);
            reader.receive(1, &mut |payload, _, _| ok &= msgs.check(payload, seq));
        }
    } else {
        for seq in 0..count {
            msgs.fill(&mut frame[HEADER..], seq);
            if corrupt.is_some_and(|(s, _)| s == seq) {
                frame[HEADER + corrupt.unwrap().1] ^= 0x20;
            }
            if nfds > 0 {
                send_with_fds(a, &frame, &fds, &mut control);
            } else {
                write_all(a, &frame);
            }
        }
        let mut report = [0u8; 9];
        read_exact(a, &mut report);
        ok &= report[0] == 1;
        receiver_rss = u64::from_le_bytes(report[1..].try_into().unwrap());
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    ok &= libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let rss = if receiver_rss > 0 {
        format!(",\"receiverMaxRssKiB\":{receiver_rss}")
    } else {
        String::new()
    };
    println!(
        "{{\"ok\":{ok},\"count\":{count},\"seconds\":{seconds}{rss},\"sndbuf\":{sndbuf},\"rcvbuf\":{rcvbuf}}}"
    );
}
