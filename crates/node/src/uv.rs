//! The few libuv calls a channel needs, declared by hand: Node (and Electron) export
//! libuv's symbols to addons, and `napi_get_uv_event_loop` hands us the loop of the
//! calling environment. A poll handle's memory is sized at run time with
//! `uv_handle_size`, so nothing here depends on libuv's struct layout.

use std::ffi::{c_int, c_void};
use std::os::fd::RawFd;

/// `uv_loop_t`, opaque.
pub type UvLoop = napi::sys::uv_loop_s;
/// `uv_poll_t` / `uv_handle_t`, opaque: only ever behind a pointer.
#[repr(C)]
pub struct UvHandle {
    _private: [u8; 0],
}

pub type PollCallback = unsafe extern "C" fn(handle: *mut UvHandle, status: c_int, events: c_int);
pub type CloseCallback = unsafe extern "C" fn(handle: *mut UvHandle);

/// `UV_POLL` in `uv_handle_type`: part of libuv 1.x's stable ABI.
const UV_POLL: c_int = 8;
pub const UV_READABLE: c_int = 1;
pub const UV_WRITABLE: c_int = 2;

extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(loop_: *mut UvLoop, handle: *mut UvHandle, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut UvHandle, events: c_int, cb: PollCallback) -> c_int;
    fn uv_poll_stop(handle: *mut UvHandle) -> c_int;
    fn uv_close(handle: *mut UvHandle, cb: CloseCallback);
    fn uv_ref(handle: *mut UvHandle);
    fn uv_unref(handle: *mut UvHandle);
    fn uv_handle_set_data(handle: *mut UvHandle, data: *mut c_void);
    fn uv_handle_get_data(handle: *const UvHandle) -> *mut c_void;
}

fn poll_words() -> usize {
    // SAFETY: uv_handle_size is a pure lookup.
    unsafe { uv_handle_size(UV_POLL) }.div_ceil(8)
}

/// A `uv_poll_t` watching one descriptor. Created with [`Poll::new`], which initialises
/// it; released only through [`Poll::close`], whose callback frees the memory after
/// libuv is done with it.
pub struct Poll {
    handle: *mut UvHandle,
}

impl Poll {
    /// Allocates and initialises a poll handle for `fd` on `loop_`, carrying `data`.
    ///
    /// # Safety
    /// `loop_` must be the live loop of the calling thread's environment.
    pub unsafe fn new(loop_: *mut UvLoop, fd: RawFd, data: *mut c_void) -> Result<Poll, c_int> {
        let memory: Box<[u64]> = vec![0u64; poll_words()].into_boxed_slice();
        let handle = Box::into_raw(memory).cast::<UvHandle>();
        // SAFETY: handle points at zeroed memory of uv_handle_size(UV_POLL) bytes, 8-aligned.
        let rc = unsafe { uv_poll_init(loop_, handle, fd as c_int) };
        if rc != 0 {
            // SAFETY: never registered with libuv: free it as the Box it was.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    handle.cast::<u64>(),
                    poll_words(),
                ))
            });
            return Err(rc);
        }
        // SAFETY: an initialised handle.
        unsafe { uv_handle_set_data(handle, data) };
        Ok(Poll { handle })
    }

    /// Watches for `events` (UV_READABLE | UV_WRITABLE); 0 stops watching.
    pub fn set(&self, events: c_int, cb: PollCallback) -> c_int {
        if events == 0 {
            // SAFETY: an initialised, not yet closed handle.
            unsafe { uv_poll_stop(self.handle) }
        } else {
            // SAFETY: as above.
            unsafe { uv_poll_start(self.handle, events, cb) }
        }
    }

    pub fn set_ref(&self, on: bool) {
        // SAFETY: an initialised, not yet closed handle.
        unsafe {
            if on {
                uv_ref(self.handle)
            } else {
                uv_unref(self.handle)
            }
        }
    }

    /// Stops watching and closes the handle; libuv stops watching the descriptor at once
    /// (so the descriptor may be closed right after), and `on_closed` runs on a later loop
    /// turn with the handle's data, after which the memory is freed.
    pub fn close(self, on_closed: CloseCallback) {
        // SAFETY: an initialised handle, closed exactly once (close consumes self).
        unsafe {
            uv_poll_stop(self.handle);
            uv_close(self.handle, on_closed);
        }
    }
}

/// The data pointer stored in a handle.
///
/// # Safety
/// `handle` must be a live handle created by [`Poll::new`].
pub unsafe fn handle_data(handle: *const UvHandle) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    unsafe { uv_handle_get_data(handle) }
}

/// Frees a handle's memory; call from its close callback, never before.
///
/// # Safety
/// `handle` must come from [`Poll::new`], and libuv must be done with it (its close
/// callback is running).
pub unsafe fn free_handle(handle: *mut UvHandle) {
    // SAFETY: the allocation was a Box<[u64]> of poll_words() words.
    drop(unsafe {
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            handle.cast::<u64>(),
            poll_words(),
        ))
    });
}

/// libuv's error name for a negative status (e.g. `EBADF`), as an errno for the core.
pub fn status_errno(status: c_int) -> i32 {
    // On Unix libuv errors are negated errno values.
    -status
}
