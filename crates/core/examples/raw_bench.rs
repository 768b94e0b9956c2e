//! The raw limit for `npm run bench`: framed messages over a stream socketpair between
//! two processes, one message per sendmsg (PROTOCOL.md frames, so the receiver does the
//! same work a channel does), with nothing between the program and the kernel.
//!
//! ```text
//! raw_bench oneway <size> <count>          one-way messages
//! raw_bench fds <size> <count> <nfds>      one-way, each message carrying nfds descriptors
//! raw_bench pingpong <size> <count>        round trips
//! ```
//!
//! Prints one JSON line: `{"ok":true,"count":N,"seconds":S}`. The receiver checks every
//! message's sequence number, length and content bytes, and for `fds` that every
//! descriptor points at the file sent (then closes it); any mismatch prints `"ok":false`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use socketpair_core::blocking::{read_messages, write_frame};
use socketpair_core::frame::FrameDecoder;
use socketpair_core::socket::{socketpair, PairOptions, SocketKind};
use socketpair_core::testutil::{fd_inode, temp_file_with};

fn fill(buf: &mut [u8], seq: u32) {
    let n = buf.len();
    if n >= 4 {
        buf[..4].copy_from_slice(&seq.to_le_bytes());
    }
    if n > 4 {
        buf[n - 1] = seq as u8;
        buf[n / 2] = seq as u8;
    }
}

fn check(data: &[u8], seq: u32, size: usize) -> bool {
    if data.len() != size {
        return false;
    }
    if size >= 4 && data[..4] != seq.to_le_bytes() {
        return false;
    }
    size <= 4 || (data[size - 1] == seq as u8 && data[size / 2] == seq as u8)
}

fn receive(
    fd: BorrowedFd<'_>,
    size: usize,
    count: u32,
    want_inode: Option<(u64, u64)>,
    nfds: usize,
    echo: bool,
) -> bool {
    let mut decoder = FrameDecoder::new(usize::MAX);
    let mut seq = 0u32;
    let mut ok = true;
    while seq < count {
        let Some(messages) = read_messages(fd, &mut decoder, 256 << 10).unwrap() else {
            return false;
        };
        for m in messages {
            ok &= check(&m.data, seq, size);
            if let Some(id) = want_inode {
                ok &= m.fds.len() == nfds && m.fds.iter().all(|f| fd_inode(f) == id);
            }
            if echo {
                write_frame(fd, &m.data, &[]).unwrap();
            }
            seq += 1;
        }
    }
    ok
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

    let (a, b) = socketpair(SocketKind::Stream, PairOptions::default()).unwrap();
    let file = temp_file_with(b"the file every descriptor points at");
    let id = fd_inode(&file);
    let echo = mode == "pingpong";

    // SAFETY: single-threaded at this point; the child only uses async-signal-safe
    // system calls and exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(a);
            let ok = receive(b.as_fd(), size, count, (nfds > 0).then_some(id), nfds, echo);
            std::process::exit(if ok { 0 } else { 3 });
        }
        ForkResult::Parent { child } => {
            drop(b);
            let fds: Vec<BorrowedFd<'_>> = (0..nfds).map(|_| file.as_fd()).collect();
            let mut buf = vec![0u8; size];
            let mut decoder = FrameDecoder::new(usize::MAX);
            let start = Instant::now();
            let mut ok = true;
            for seq in 0..count {
                fill(&mut buf, seq);
                write_frame(a.as_fd(), &buf, &fds).unwrap();
                if echo {
                    let reply = read_messages(a.as_fd(), &mut decoder, 64 << 10)
                        .unwrap()
                        .unwrap();
                    ok &= reply.len() == 1 && check(&reply[0].data, seq, size);
                }
            }
            let status = waitpid(child, None).unwrap();
            let seconds = start.elapsed().as_secs_f64();
            ok &= matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0));
            println!("{{\"ok\":{ok},\"count\":{count},\"seconds\":{seconds}}}");
        }
    }
}
