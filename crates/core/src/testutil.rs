//! Helpers for this crate's tests and examples: descriptor counting and identity.
//! Not part of the API.
#![allow(clippy::panic)]

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many descriptors this process has open (from /proc/self/fd or /dev/fd).
pub fn open_fd_count() -> usize {
    let dir = if std::path::Path::new("/proc/self/fd").exists() {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    // The directory handle itself shows up in the listing: subtract it.
    std::fs::read_dir(dir)
        .map(|d| d.count())
        .unwrap_or(0)
        .saturating_sub(1)
}

/// (device, inode) of what a descriptor points to: equal means the same open file.
pub fn fd_inode<Fd: AsFd>(fd: &Fd) -> (u64, u64) {
    match nix::sys::stat::fstat(fd.as_fd()) {
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => (st.st_dev as u64, st.st_ino as u64),
        Err(_) => (0, 0),
    }
}

/// A fresh, already unlinked temporary file holding `contents`, opened read-write.
pub fn temp_file_with(contents: &[u8]) -> OwnedFd {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "socketpair-core-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    file.write_all(contents)
        .unwrap_or_else(|e| panic!("write: {e}"));
    OwnedFd::from(file)
}

/// Reads a whole file from the start through a descriptor (pread, so the offset stays).
pub fn read_all_at_start<Fd: AsFd>(fd: &Fd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut off = 0;
    while let Ok(n) = nix::sys::uio::pread(fd.as_fd(), &mut buf, off) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        off += n as i64;
    }
    out
}

/// Whether this OS has AF_UNIX SOCK_SEQPACKET (macOS does not).
pub const HAS_SEQPACKET: bool = cfg!(any(target_os = "linux", target_os = "freebsd"));

/// The socket kinds this OS supports, for tests that run over each.
pub fn kinds() -> Vec<crate::socket::SocketKind> {
    use crate::socket::SocketKind;
    if HAS_SEQPACKET {
        vec![SocketKind::Stream, SocketKind::Seqpacket, SocketKind::Dgram]
    } else {
        vec![SocketKind::Stream, SocketKind::Dgram]
    }
}

/// The record kind tests use: seqpacket where it exists, dgram elsewhere.
pub fn record_kind() -> crate::socket::SocketKind {
    if HAS_SEQPACKET {
        crate::socket::SocketKind::Seqpacket
    } else {
        crate::socket::SocketKind::Dgram
    }
}
