//! Who is on the other end of a Unix socket: SO_PEERCRED, LOCAL_PEERCRED, getpeereid.

use std::os::fd::BorrowedFd;

use crate::error::{Error, Result};

/// The credentials of the process that created (connected) the peer socket, as the
/// kernel recorded them. For a socketpair that is the process that called socketpair(2),
/// even after the end was passed to another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// The peer's process id, where the platform reports it.
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

/// Linux: SO_PEERCRED. See socket(7).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_credentials(fd: BorrowedFd<'_>) -> Result<Credentials> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let c =
        getsockopt(&fd, PeerCredentials).map_err(|e| Error::os("getsockopt(SO_PEERCRED)", e))?;
    Ok(Credentials {
        pid: (c.pid() > 0).then_some(c.pid()),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// macOS: getpeereid(3) for uid/gid, LOCAL_PEERPID for the pid.
#[cfg(any(target_os = "macos", target_os = "ios"))]
pub fn peer_credentials(fd: BorrowedFd<'_>) -> Result<Credentials> {
    use std::os::fd::AsRawFd;
    let (uid, gid) = nix::unistd::getpeereid(fd).map_err(|e| Error::os("getpeereid", e))?;
    let mut pid: libc::pid_t = 0;
    let mut len = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
    // SAFETY: pid and len are live locals and len states pid's size; the kernel writes
    // at most len bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERPID,
            (&mut pid as *mut libc::pid_t).cast(),
            &mut len,
        )
    };
    Ok(Credentials {
        pid: (rc == 0 && pid > 0).then_some(pid),
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}

/// FreeBSD and others: getpeereid(3); no pid.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios"
)))]
pub fn peer_credentials(fd: BorrowedFd<'_>) -> Result<Credentials> {
    let (uid, gid) = nix::unistd::getpeereid(fd).map_err(|e| Error::os("getpeereid", e))?;
    Ok(Credentials {
        pid: None,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::{socketpair, PairOptions};
    use std::os::fd::AsFd;

    #[test]
    fn a_pair_made_here_reports_this_process() {
        for kind in crate::testutil::kinds() {
            let (a, _b) = socketpair(kind, PairOptions::default()).unwrap();
            let c = peer_credentials(a.as_fd()).unwrap();
            assert_eq!(c.uid, nix::unistd::getuid().as_raw());
            assert_eq!(c.gid, nix::unistd::getgid().as_raw());
            if cfg!(any(target_os = "linux", target_os = "macos")) {
                assert_eq!(c.pid, Some(std::process::id() as i32), "{kind:?}");
            }
        }
    }

    #[test]
    fn not_a_socket_is_enotsock() {
        let file = crate::testutil::temp_file_with(b"");
        let err = peer_credentials(file.as_fd()).unwrap_err();
        assert_eq!(err.code(), "ENOTSOCK");
    }
}
