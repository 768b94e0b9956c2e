//! The decoder's fuzzing harness: the checker the cargo-fuzz target
//! (`crates/core/fuzz/fuzz_targets/decoder.rs`, `npm run fuzz`) runs every input
//! through, and that the tests replaying the kept corpus and the well-formed property
//! test use. Compiled only with the `test-util` feature (and for this crate's tests).
//!
//! An input is a *script*: a byte string that says what a peer sent and how the receives
//! split it, so that every input — generated or kept in the corpus — is a plain file:
//!
//! ```text
//! byte 0          limit selector: max_message_bytes = [0, 16, 1000, 1 MiB, 64 MiB][b % 5]
//! then ops:
//!   t < 0x80      a receive: u16 LE length, one byte for its descriptor count, then the
//!                 bytes (cut short at the end of the script). Bit 0 of t: deliver it
//!                 through the direct payload path when a payload is pending.
//!   t >= 0x80     end of stream: finish() and stop.
//! ```
//! Descriptor count byte v: v % 64, except 254 → 253 and 255 → 300; an input gets at
//! most [`FdSource::per_input`] descriptors in all (2,000), later receives none.
//!
//! [`run`] executes a script against a [`FrameDecoder`] with real descriptors and checks
//! the invariants: every descriptor handed in is either delivered or closed; the ones
//! delivered are exactly a prefix of the ones handed in, in order, none twice; no
//! payload exceeds the limit; after an error the decoder holds nothing.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::frame::{FrameDecoder, FrameHeader, Message};

/// The limits a script can select.
pub const LIMITS: [usize; 5] = [0, 16, 1000, 1 << 20, 64 << 20];

/// Makes fresh descriptors (duplicates of one open file) with numbers that only grow
/// within an input, so that a number the decoder closed is never reused before the
/// checks ask "is it closed?".
pub struct FdSource {
    base: OwnedFd,
    next: RawFd,
    low: RawFd,
    high: RawFd,
}

impl FdSource {
    /// Raises RLIMIT_NOFILE's soft limit as far as allowed (up to 65,536) and takes the
    /// upper part of the descriptor table as its window.
    pub fn new(base: OwnedFd) -> Self {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: lim is a live rlimit the kernel writes into.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            let wanted = lim.rlim_max.min(65_536);
            if lim.rlim_cur < wanted {
                lim.rlim_cur = wanted;
                // SAFETY: lim is a valid rlimit; raising the soft limit up to the hard
                // limit is always allowed.
                unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
                // SAFETY: as above.
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            }
        }
        let soft = lim.rlim_cur.clamp(256, 65_536) as RawFd;
        let low = (soft / 4).min(1000);
        FdSource {
            base,
            next: low,
            low,
            high: soft - 64,
        }
    }

    /// The most descriptors one input may be handed (further receives get none).
    pub fn per_input(&self) -> usize {
        (((self.high - self.low) / 2) as usize).min(2000)
    }

    /// Starts a new input: numbers may be reused from here on (the previous input's are
    /// all closed, which `run` checked).
    fn start_input(&mut self) {
        if self.next as usize + self.per_input() + 1 > self.high as usize {
            self.next = self.low;
        }
    }

    fn make(&mut self) -> Result<OwnedFd, String> {
        // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor and the minimum number; it
        // returns a new descriptor that we own, or -1.
        let fd = unsafe { libc::fcntl(self.base.as_raw_fd(), libc::F_DUPFD_CLOEXEC, self.next) };
        if fd < 0 {
            return Err(format!(
                "F_DUPFD failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        self.next = fd + 1;
        // SAFETY: fd was just returned by fcntl and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless: EBADF if it is not open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// What a script did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Each delivered message: its payload and how many descriptors it carried.
    pub messages: Vec<(Vec<u8>, usize)>,
    /// The error code, if the stream failed.
    pub error: Option<String>,
    /// Descriptors handed in, and how many were delivered.
    pub fds_in: usize,
    pub fds_delivered: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let end = (self.pos + n).min(self.bytes.len());
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        s
    }
}

fn fd_count(v: u8) -> usize {
    match v {
        254 => crate::msg::MAX_FDS_PER_MESSAGE,
        255 => 300,
        v => (v % 64) as usize,
    }
}

/// Runs one script. `Err` is an invariant violation (a bug); a protocol error the
/// decoder reports is part of the `Outcome`.
pub fn run(script: &[u8], fds: &mut FdSource) -> Result<Outcome, String> {
    let mut r = Reader {
        bytes: script,
        pos: 0,
    };
    let Some(sel) = r.byte() else {
        return Ok(Outcome::default());
    };
    let max = LIMITS[sel as usize % LIMITS.len()];
    fds.start_input();
    let budget = fds.per_input();
    let mut decoder = FrameDecoder::new(max);
    let mut out: Vec<Message> = Vec::new();
    let mut handed: Vec<RawFd> = Vec::new();
    let mut outcome = Outcome::default();
    let mut finished = false;
    while let Some(t) = r.byte() {
        if t >= 0x80 {
            if let Err(e) = decoder.finish() {
                outcome.error.get_or_insert(e.code());
            }
            finished = true;
            break;
        }
        let (Some(lo), Some(hi), Some(v)) = (r.byte(), r.byte(), r.byte()) else {
            break;
        };
        let len = u16::from_le_bytes([lo, hi]) as usize;
        let data = r.take(len);
        let n = if data.is_empty() || handed.len() + fd_count(v) > budget {
            0
        } else {
            fd_count(v)
        };
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            let fd = fds.make()?;
            handed.push(fd.as_raw_fd());
            batch.push(fd);
        }
        let direct = t & 1 == 1;
        let result = match decoder.payload_buffer() {
            Some(buf) if direct && !data.is_empty() && data.len() <= buf.len() => {
                buf[..data.len()].copy_from_slice(data);
                decoder.payload_received(data.len(), batch, &mut out)
            }
            _ => decoder.push(data, batch, &mut out),
        };
        if let Err(e) = result {
            outcome.error.get_or_insert(e.code());
            if decoder.queued_fds() != 0 {
                return Err(format!(
                    "after an error the decoder still holds {} descriptors",
                    decoder.queued_fds()
                ));
            }
        }
    }
    if finished && decoder.queued_fds() != 0 {
        return Err("after finish() the decoder still holds descriptors".into());
    }
    drop(decoder); // closes whatever it still held (a script that ends without EOF)

    // Delivered: exactly a prefix of what was handed in, in order, none twice.
    let mut delivered: Vec<RawFd> = Vec::new();
    for m in &out {
        if m.data.len() > max {
            return Err(format!(
                "a {}-byte payload passed a limit of {max}",
                m.data.len()
            ));
        }
        if m.fds.len() > crate::msg::MAX_FDS_PER_MESSAGE {
            return Err(format!("a message carried {} descriptors", m.fds.len()));
        }
        delivered.extend(m.fds.iter().map(|f| f.as_raw_fd()));
        outcome.messages.push((m.data.clone(), m.fds.len()));
    }
    if delivered.as_slice() != &handed[..delivered.len().min(handed.len())]
        || delivered.len() > handed.len()
    {
        return Err(format!(
            "delivered descriptors {delivered:?} are not a prefix of those handed in {handed:?}"
        ));
    }
    for (i, fd) in handed.iter().enumerate() {
        let open = is_open(*fd);
        if i < delivered.len() && !open {
            return Err(format!("delivered descriptor {fd} is not open"));
        }
        if i >= delivered.len() && open {
            return Err(format!(
                "descriptor {fd} (handed in #{i}) was neither delivered nor closed"
            ));
        }
    }
    outcome.fds_in = handed.len();
    outcome.fds_delivered = delivered.len();
    drop(out);
    if let Some(fd) = delivered.iter().find(|fd| is_open(**fd)) {
        return Err(format!(
            "descriptor {fd} stayed open after its message was dropped"
        ));
    }
    Ok(outcome)
}

/// A script a well-behaved peer could produce: `messages` (payload, descriptor count)
/// framed and sent in groups (one send per group, its descriptors on its first byte),
/// each send received in pieces of the given sizes (the first piece brings the
/// descriptors). `sends` lists how many messages each send carries; `cuts` the piece
/// sizes, reused cyclically; `direct` marks which pieces use the direct payload path.
pub fn well_formed_script(
    limit_selector: u8,
    messages: &[(Vec<u8>, usize)],
    sends: &[usize],
    cuts: &[usize],
    end_of_stream: bool,
) -> Vec<u8> {
    let mut script = vec![limit_selector];
    let mut i = 0;
    let mut cut = 0;
    let mut send_sizes = sends.iter().copied().cycle();
    while i < messages.len() {
        let count = send_sizes.next().unwrap_or(1).max(1);
        let group = &messages[i..(i + count).min(messages.len())];
        i += group.len();
        let mut wire = Vec::new();
        let mut nfds = 0;
        for (data, n) in group {
            wire.extend_from_slice(&FrameHeader::new(data.len() as u32, *n as u16).encode());
            wire.extend_from_slice(data);
            nfds += n;
        }
        let mut first = true;
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let size = cuts
                .get(cut % cuts.len().max(1))
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, 0xffff)
                .min(rest.len());
            cut += 1;
            let t = (cut % 2) as u8; // alternate the direct path
            script.push(t);
            script.extend_from_slice(&(size as u16).to_le_bytes());
            script.push(if first { encode_fd_count(nfds) } else { 0 });
            script.extend_from_slice(&rest[..size]);
            rest = &rest[size..];
            first = false;
        }
    }
    if end_of_stream {
        script.push(0x80);
    }
    script
}

/// The descriptor-count byte for `n` (n < 64, or the cap).
pub fn encode_fd_count(n: usize) -> u8 {
    if n == crate::msg::MAX_FDS_PER_MESSAGE {
        254
    } else {
        (n % 64) as u8
    }
}

/// The base descriptor for an [`FdSource`]: an open temporary file.
pub fn fd_source() -> FdSource {
    FdSource::new(crate::testutil::temp_file_with(b"fuzz"))
}
