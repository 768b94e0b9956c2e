//! The frame codec over real socketpairs: random messages, random coalescing on the
//! sending side, random read sizes on the receiving side, real descriptors checked by
//! identity (device, inode), and the process's open-descriptor count checked after.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::thread;

use proptest::prelude::*;
use socketpair_core::blocking::{read_messages, write_frame, write_frames};
use socketpair_core::frame::{FrameDecoder, FrameHeader, Message, MAX_PAYLOAD};
use socketpair_core::msg::{recv_with_fds, MAX_FDS_PER_MESSAGE};
use socketpair_core::socket::{self, PairOptions, SocketKind};
use socketpair_core::testutil::{fd_inode, open_fd_count, read_all_at_start, temp_file_with};

fn stream_pair() -> (OwnedFd, OwnedFd) {
    socket::socketpair(SocketKind::Stream, PairOptions::default()).unwrap()
}

/// Sends, in one sendmsg, a header declaring `len` and `nfds` (whatever actually
/// follows), `payload`, and the descriptors `fds`: for peers that break the rules.
fn send_raw(fd: BorrowedFd<'_>, len: u32, nfds: u16, payload: &[u8], fds: &[OwnedFd]) {
    let mut wire = FrameHeader::new(len, nfds).encode().to_vec();
    wire.extend_from_slice(payload);
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    socketpair_core::msg::send_with_fds(fd, &[std::io::IoSlice::new(&wire)], &borrowed).unwrap();
}

/// A message to send: payload, and files whose descriptors ride with it.
struct Outgoing {
    payload: Vec<u8>,
    files: Vec<OwnedFd>,
}

fn payload_for(index: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (index * 31 + i * 7) as u8).collect()
}

fn outgoing(sizes: &[(usize, usize)]) -> Vec<Outgoing> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &(len, nfds))| Outgoing {
            payload: payload_for(i, len),
            files: (0..nfds)
                .map(|j| temp_file_with(format!("message {i} fd {j}").as_bytes()))
                .collect(),
        })
        .collect()
}

/// Reads exactly `count` messages with recvmsg buffers of the given sizes (cycled).
fn read_with_sizes(fd: BorrowedFd<'_>, count: usize, read_sizes: &[usize]) -> Vec<Message> {
    let mut decoder = FrameDecoder::new(MAX_PAYLOAD);
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_sizes.iter().copied().max().unwrap_or(1)];
    let mut i = 0;
    while out.len() < count {
        let size = read_sizes[i % read_sizes.len()].max(1);
        i += 1;
        let mut fds = Vec::new();
        let r = recv_with_fds(fd, &mut buf[..size], MAX_FDS_PER_MESSAGE, &mut fds).unwrap();
        assert!(r.bytes > 0, "unexpected EOF after {} messages", out.len());
        decoder.push(&buf[..r.bytes], fds, &mut out).unwrap();
    }
    assert!(decoder.is_idle(), "nothing left over");
    out
}

/// Sends `msgs` in groups of the given sizes (each group coalesced into one sendmsg).
fn send_grouped(fd: BorrowedFd<'_>, msgs: &[Outgoing], groups: &[usize]) {
    let borrowed: Vec<Vec<BorrowedFd<'_>>> = msgs
        .iter()
        .map(|m| m.files.iter().map(|f| f.as_fd()).collect())
        .collect();
    let frames: Vec<(&[u8], &[BorrowedFd<'_>])> = msgs
        .iter()
        .zip(&borrowed)
        .map(|(m, b)| (&m.payload[..], &b[..]))
        .collect();
    let mut start = 0;
    let mut g = 0;
    while start < frames.len() {
        let n = groups[g % groups.len()].max(1).min(frames.len() - start);
        g += 1;
        write_frames(fd, &frames[start..start + n]).unwrap();
        start += n;
    }
}

fn assert_delivered(sent: &[Outgoing], got: &[Message]) {
    assert_eq!(sent.len(), got.len(), "message count");
    for (i, (s, g)) in sent.iter().zip(got).enumerate() {
        assert_eq!(s.payload, g.data, "payload of message {i}");
        let want: Vec<_> = s.files.iter().map(fd_inode).collect();
        let have: Vec<_> = g.fds.iter().map(fd_inode).collect();
        assert_eq!(
            want, have,
            "descriptors of message {i} (order and identity)"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// random frame sizes, random coalescing, random read sizes: every fd
    /// arrives with its own message (compared by inode).
    #[test]
    fn random_sizes_splits_and_fds(
        sizes in prop::collection::vec(
            (prop_oneof![4 => 0usize..64, 3 => 64usize..4096, 1 => 4096usize..200_000], 0usize..5),
            1..40,
        ),
        groups in prop::collection::vec(1usize..8, 1..8),
        read_sizes in prop::collection::vec(
            prop_oneof![1usize..16, 16usize..1024, 1024usize..300_000], 1..8,
        ),
    ) {
        let base = open_fd_count();
        {
            let msgs = outgoing(&sizes);
            let (a, b) = stream_pair();
            let got = thread::scope(|s| {
                let reader = s.spawn(|| read_with_sizes(b.as_fd(), msgs.len(), &read_sizes));
                send_grouped(a.as_fd(), &msgs, &groups);
                reader.join().unwrap()
            });
            assert_delivered(&msgs, &got);
        }
        prop_assert_eq!(open_fd_count(), base);
    }
}

/// a frame far larger than the socket buffer, written non-blocking so that
/// the kernel takes it in many partial writes: its descriptors arrive exactly once.
#[test]
fn partial_write_of_a_large_frame_with_fds() {
    let base = open_fd_count();
    {
        let msgs = outgoing(&[(8 << 20, 3), (10, 1), (3 << 20, 2)]);
        let (a, b) = stream_pair();
        socket::set_nonblocking(a.as_fd(), true).unwrap();
        let got = thread::scope(|s| {
            let reader = s.spawn(|| read_with_sizes(b.as_fd(), msgs.len(), &[65536, 7, 100_000]));
            send_grouped(a.as_fd(), &msgs, &[1, 2]);
            reader.join().unwrap()
        });
        assert_delivered(&msgs, &got);
        // Nothing more is waiting: no duplicate descriptors, no stray bytes.
        drop(a);
        let mut fds = Vec::new();
        let r = recv_with_fds(b.as_fd(), &mut [0u8; 16], 16, &mut fds).unwrap();
        assert_eq!((r.bytes, fds.len()), (0, 0));
    }
    assert_eq!(open_fd_count(), base);
}

/// At the socket level: EAGAIN on a full buffer with nothing sent, then
/// drain, then retry with the descriptors: they arrive exactly once.
#[test]
fn eagain_then_drain_delivers_fds_once() {
    let base = open_fd_count();
    {
        let (a, b) = stream_pair();
        socket::set_nonblocking(a.as_fd(), true).unwrap();
        // Fill the socket until the kernel refuses a byte.
        let filler = vec![0u8; 65536];
        let mut filled = 0usize;
        loop {
            match socketpair_core::msg::send_with_fds(
                a.as_fd(),
                &[std::io::IoSlice::new(&filler)],
                &[],
            ) {
                Ok(n) => filled += n,
                Err(e) => {
                    assert_eq!(e.code(), "EAGAIN");
                    break;
                }
            }
        }
        let file = temp_file_with(b"exactly once");
        let header = FrameHeader::new(1, 1).encode();
        let err = socketpair_core::msg::send_with_fds(
            a.as_fd(),
            &[std::io::IoSlice::new(&header), std::io::IoSlice::new(b"!")],
            &[file.as_fd()],
        )
        .unwrap_err();
        assert_eq!(err.code(), "EAGAIN", "nothing sent, so nothing attached");
        // Drain the filler, then retry with the descriptor.
        let got = thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut left = filled;
                let mut buf = vec![0u8; 65536];
                while left > 0 {
                    let mut fds = Vec::new();
                    let r =
                        recv_with_fds(b.as_fd(), &mut buf[..left.min(65536)], 4, &mut fds).unwrap();
                    assert!(fds.is_empty());
                    left -= r.bytes;
                }
                let mut d = FrameDecoder::new(16);
                read_messages(b.as_fd(), &mut d, 4096).unwrap().unwrap()
            });
            write_frame(a.as_fd(), b"!", &[file.as_fd()]).unwrap();
            reader.join().unwrap()
        });
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, b"!");
        assert_eq!(got[0].fds.len(), 1);
        assert_eq!(read_all_at_start(&got[0].fds[0]), b"exactly once");
        assert_eq!(fd_inode(&got[0].fds[0]), fd_inode(&file));
    }
    assert_eq!(open_fd_count(), base);
}

/// Through the frame layer: 0, 1, 64 and the cap in one frame; cap + 1 is a
/// typed error before anything is sent.
#[test]
fn frames_with_1_64_and_the_cap() {
    let base = open_fd_count();
    {
        let msgs = outgoing(&[(3, 0), (3, 1), (3, 64), (3, MAX_FDS_PER_MESSAGE)]);
        let (a, b) = stream_pair();
        let got = thread::scope(|s| {
            let reader = s.spawn(|| read_with_sizes(b.as_fd(), msgs.len(), &[4096]));
            send_grouped(a.as_fd(), &msgs, &[1]);
            reader.join().unwrap()
        });
        assert_delivered(&msgs, &got);

        let too_many: Vec<OwnedFd> = (0..=MAX_FDS_PER_MESSAGE)
            .map(|_| temp_file_with(b""))
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = too_many.iter().map(|f| f.as_fd()).collect();
        let err = write_frame(a.as_fd(), b"x", &borrowed).unwrap_err();
        assert_eq!(err.code(), "ERR_TOO_MANY_FDS");
    }
    assert_eq!(open_fd_count(), base);
}

/// Over a real socket: a peer that attaches more descriptors than its header
/// declares. The frame itself is delivered; at end of stream the extra is reported as
/// ERR_PROTOCOL and closed.
#[test]
fn extra_fds_from_a_real_peer() {
    let base = open_fd_count();
    {
        let (a, b) = stream_pair();
        let files: Vec<OwnedFd> = (0..3).map(|_| temp_file_with(b"")).collect();
        send_raw(a.as_fd(), 2, 1, b"hi", &files);
        drop(a);
        let mut d = FrameDecoder::new(1024);
        let first = read_messages(b.as_fd(), &mut d, 4096).unwrap().unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].fds.len(), 1);
        assert_eq!(fd_inode(&first[0].fds[0]), fd_inode(&files[0]));
        let err = read_messages(b.as_fd(), &mut d, 4096).unwrap_err();
        assert_eq!(err.code(), "ERR_PROTOCOL");
        assert!(
            err.to_string()
                .contains("2 descriptors arrived that no frame claimed"),
            "{err}"
        );
        assert_eq!(d.queued_fds(), 0);
    }
    assert_eq!(open_fd_count(), base);
}

/// A peer killed mid-frame looks like EOF in the middle of a frame.
#[test]
fn eof_mid_frame_is_a_protocol_error_and_closes_fds() {
    let base = open_fd_count();
    {
        let (a, b) = stream_pair();
        send_raw(a.as_fd(), 100, 1, &[7u8; 40], &[temp_file_with(b"")]);
        drop(a);
        let mut d = FrameDecoder::new(1024);
        let err = read_messages(b.as_fd(), &mut d, 4096).unwrap_err();
        assert_eq!(err.code(), "ERR_PROTOCOL");
        assert!(err.to_string().contains("40 of 100 payload bytes"), "{err}");
    }
    assert_eq!(open_fd_count(), base);
}

/// The harder half: the extra descriptor of one send would be taken by the
/// frame of the next send, which declares one of its own. That frame is not delivered
/// with the wrong file: ERR_PROTOCOL, and every descriptor is closed. Reads of every
/// size, so the kernel's way of splitting does not matter.
#[test]
fn an_extra_fd_is_never_handed_to_the_next_sends_frame() {
    let base = open_fd_count();
    for read_size in [1usize, 3, 8, 10, 11, 4096] {
        let (a, b) = stream_pair();
        let files: Vec<OwnedFd> = (0..3)
            .map(|i| temp_file_with(format!("{i}").as_bytes()))
            .collect();
        send_raw(a.as_fd(), 2, 1, b"hi", &files[..2]); // declares 1, carries 2
        send_raw(a.as_fd(), 2, 1, b"ok", &files[2..]); // declares 1, carries 1
        drop(a);
        let mut d = FrameDecoder::new(1024);
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        let err = loop {
            let mut fds = Vec::new();
            let r = recv_with_fds(b.as_fd(), &mut buf, MAX_FDS_PER_MESSAGE, &mut fds).unwrap();
            let step = if r.bytes == 0 {
                d.finish()
            } else {
                d.push(&buf[..r.bytes], fds, &mut out)
            };
            if let Err(e) = step {
                break e;
            }
            assert!(r.bytes > 0, "EOF without an error (read size {read_size})");
        };
        assert_eq!(err.code(), "ERR_PROTOCOL", "read size {read_size}");
        assert_eq!(
            out.len(),
            1,
            "read size {read_size}: only the first frame is delivered"
        );
        assert_eq!(out[0].data, b"hi");
        assert_eq!(fd_inode(&out[0].fds[0]), fd_inode(&files[0]));
        assert_eq!(d.queued_fds(), 0);
    }
    assert_eq!(open_fd_count(), base);
}
