//! The descriptors that open channels own, process-wide (descriptor numbers are shared
//! by every thread and worker of the process).
//!
//! It catches two mistakes that would otherwise close an unrelated file: adopting the
//! same socket twice (`Channel.fromFd(n)` twice: the second `close()` would close
//! whatever reused the number), and closing a channel's descriptor behind its back
//! (`closeFds` of a number a channel adopted). Each entry records the socket's identity
//! (`st_dev`, `st_ino`), so a number that was closed and reused for something else is
//! told apart from the socket the channel adopted.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use socketpair_core::socket;
use socketpair_core::Error;

pub(crate) type Identity = (u64, u64);

static ADOPTED: Mutex<Option<HashMap<RawFd, Identity>>> = Mutex::new(None);

fn adopted() -> MutexGuard<'static, Option<HashMap<RawFd, Identity>>> {
    // A panic cannot happen while the lock is held (no code here panics), but a poisoned
    // lock still holds a consistent map.
    ADOPTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records that a channel now owns `fd`, whose identity is `id`. Fails with
/// `ERR_FD_IN_USE` if an open channel already owns that very socket under that number.
pub(crate) fn claim(fd: RawFd, id: Identity) -> Result<(), Error> {
    let mut map = adopted();
    let map = map.get_or_insert_with(HashMap::new);
    if map.get(&fd) == Some(&id) {
        return Err(in_use(fd));
    }
    // A different identity means the number was closed behind the old channel's back
    // and reused: the old channel no longer owns it (it checks before closing).
    map.insert(fd, id);
    Ok(())
}

/// Forgets `fd` if it is still recorded as `id`. Returns whether the number still
/// points to that socket, that is, whether the caller may close it.
pub(crate) fn release(fd: BorrowedFd<'_>, id: Identity) -> bool {
    use std::os::fd::AsRawFd;
    let mut map = adopted();
    if let Some(map) = map.as_mut() {
        if map.get(&fd.as_raw_fd()) == Some(&id) {
            map.remove(&fd.as_raw_fd());
        }
    }
    socket::identity(fd).is_ok_and(|now| now == id)
}

/// Gives `fd` up without closing it: forgotten here, left open for whoever owns it (the
/// caller of an adoption that failed, or a handle the descriptor turned out to belong to).
pub(crate) fn hand_back(fd: OwnedFd, id: Identity) {
    let _ = release(fd.as_fd(), id);
    let _ = fd.into_raw_fd();
}

/// Whether an open channel owns the socket now at `fd`.
pub(crate) fn owned_by_channel(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    let map = adopted();
    let Some(id) = map.as_ref().and_then(|m| m.get(&fd)).copied() else {
        return false;
    };
    drop(map);
    // SAFETY: the borrow lasts for this one fstat, which answers EBADF for a closed number.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    socket::identity(borrowed).is_ok_and(|now| now == id)
}

pub(crate) fn in_use(fd: RawFd) -> Error {
    Error::State {
        code: "ERR_FD_IN_USE",
        message: format!(
            "descriptor {fd} belongs to an open Channel, which closes it itself: \
             close the channel instead, and adopt a descriptor only once"
        ),
    }
}
