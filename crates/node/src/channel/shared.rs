//! A channel's native state — the one owner of its life — and the operations on it that
//! never call into JS: the poll mask, closing, lingering, and the environment's
//! teardown.
//!
//! The life of a channel (docs/ARCHITECTURE.md draws it):
//!
//! ```text
//!   Open ──close()──▶ Lingering (finishing the one frame already begun) ──▶ Closed
//!     │                                                                      ▲
//!     └──────── error, teardown, or both halves ended ─────────────────────────┘
//! ```
//!
//! Within `Open`, the read half goes open → ended (the peer's end of stream was
//! delivered) and the write half open → ending (`end()` called, queue draining) → ended
//! (shut down). [`Shared::state`] reports the halves to JS as bits.
//!
//! Ownership: the state lives in an `Rc<RefCell<Shared>>` held by the JS object, by the
//! poll handle (released in its close callback) and by the environment's cleanup hook
//! (released when the hook runs or is removed). No borrow is ever held while JS runs, so
//! JS may call anything — `close()` included — from inside a callback.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::ptr;
use std::rc::{Rc, Weak};

use super::batch::Core;
use napi::sys;
use nix::errno::Errno;
use socketpair_core::write_queue::Flush;
use socketpair_core::{socket, Error};

use super::delivery::{on_poll, Inflight, Pending};
use crate::js::{AsyncContext, Reference};
use crate::registry::{self, Identity};
use crate::uv::{self, Poll, UV_READABLE, UV_WRITABLE};

pub(crate) type SharedRef = Rc<RefCell<Shared>>;

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    /// Closed for JS; the rest of a frame that had begun to go out is still being
    /// written, so that the peer never sees half a frame. Then `Closed`.
    Lingering,
    Closed,
}

/// Bits of [`Shared::state`], exported to JS (`binding.d.ts`).
pub(crate) mod bits {
    /// The peer's end of stream has been delivered: nothing more will be read.
    pub const READ_ENDED: u32 = 1;
    /// `end()` was called: no more sends.
    pub const WRITE_ENDING: u32 = 2;
    /// Everything sent before `end()` has been written and the sending side shut down.
    pub const WRITE_ENDED: u32 = 4;
    /// The sending side was ended because the peer ended (`allowHalfOpen: false`).
    pub const ENDED_BY_PEER: u32 = 8;
    /// Closed (or lingering): the channel is gone for JS.
    pub const CLOSED: u32 = 16;
}

/// The JS functions a channel calls, and the context it calls them in.
pub(crate) struct Handlers {
    pub messages: Reference,
    pub drain: Reference,
    pub end: Reference,
    pub error: Reference,
    pub finish: Reference,
    pub refused: Reference,
    pub written: Reference,
    /// The channel object itself: `this` for every call.
    pub owner: Reference,
    pub context: AsyncContext,
}

/// The environment's cleanup hook, registered with a strong count of the state.
pub(crate) struct CleanupHook {
    handle: sys::napi_async_cleanup_hook_handle,
    /// The strong count the hook holds; null once the hook has run (it took it).
    arg: *const RefCell<Shared>,
}

impl CleanupHook {
    /// Unregisters the hook and releases the strong count it held (unless it ran and
    /// took it already).
    pub(crate) fn remove(self) {
        // SAFETY: the handle came from napi_add_async_cleanup_hook and is removed once
        // (remove consumes the hook).
        unsafe { sys::napi_remove_async_cleanup_hook(self.handle) };
        if !self.arg.is_null() {
            // SAFETY: the strong count given to the hook in `register`, not yet taken.
            drop(unsafe { Rc::from_raw(self.arg) });
        }
    }
}

/// Heavy parts are boxed: a closed channel's state may wait for the loop's next turn
/// (libuv closes handles asynchronously) or for the garbage collector, and should hold
/// little meanwhile.
pub(crate) struct Shared {
    pub env: sys::napi_env,
    /// This state itself, for the strong count a poll handle holds once it exists.
    pub this: Weak<RefCell<Shared>>,
    /// The loop the poll handle is created on, the first time the channel polls.
    pub uv_loop: *mut uv::UvLoop,
    /// `ref()`/`unref()`, applied to the poll handle when there is one.
    pub refed: bool,
    pub core: Option<Box<Core>>,
    /// The socket's identity when adopted: the descriptor number is ours only while it
    /// still points to this.
    pub identity: Identity,
    pub poll: Option<Poll>,
    /// The mask libuv is watching now.
    pub events: c_int,
    /// JS wants messages (a listener or iterator, and not paused).
    pub reading: bool,
    /// The last flush stopped at EAGAIN: poll for writable until a flush completes.
    /// (Sends are flushed from JS at the end of the turn; watching for writable only
    /// when the socket is actually full saves two epoll_ctl calls per send.)
    pub write_blocked: bool,
    pub handlers: Option<Box<Handlers>>,
    pub hook: Option<CleanupHook>,
    /// The environment's cleanup hook closed us: remove the hook once the poll handle
    /// has finished closing.
    pub teardown: bool,
    pub phase: Phase,
    pub read_ended: bool,
    pub ended_by_peer: bool,
    /// A message was written at once during this turn of the loop: the next sends queue
    /// (one flush for the rest of a burst). Cleared by a flush and by each poll callback.
    pub wrote_this_turn: bool,
    /// JS waits for send callbacks: report progress of the queue.
    pub notify_written: bool,
    /// A batch JS has not finished delivering: nothing more is read until it has.
    pub inflight: Option<Box<Inflight>>,
    /// A batch has been handed to JS and JS has not finished it (set before the call,
    /// cleared when JS returns true or calls `settle()`, which it may do from the call's
    /// own tick queue).
    pub batch_open: bool,
    /// The descriptor turned out to belong to something else (see `new_poll`): it is
    /// left open on close.
    pub disowned: bool,
    /// End of stream or an error found behind the in-flight batch, reported after it.
    pub pending: Option<Pending>,
    /// Calls into JS in progress (a handler may close the channel, or start another
    /// turn of delivery, while it runs).
    pub emitting: u32,
    /// Handlers released by a close() during a call into JS: dropped once the call
    /// returns, since the call is still using their async context.
    pub retired: Option<Box<Handlers>>,
}

impl Shared {
    pub(crate) fn new(
        env: sys::napi_env,
        uv_loop: *mut uv::UvLoop,
        core: Core,
        identity: Identity,
        this: Weak<RefCell<Shared>>,
    ) -> Self {
        Shared {
            env,
            this,
            uv_loop,
            refed: true,
            core: Some(Box::new(core)),
            identity,
            poll: None,
            events: 0,
            reading: false,
            write_blocked: false,
            handlers: None,
            hook: None,
            teardown: false,
            phase: Phase::Open,
            read_ended: false,
            ended_by_peer: false,
            wrote_this_turn: false,
            notify_written: false,
            inflight: None,
            batch_open: false,
            disowned: false,
            pending: None,
            emitting: 0,
            retired: None,
        }
    }

    pub(crate) fn core(&mut self) -> Result<&mut Core, Error> {
        match (&mut self.core, self.phase) {
            (Some(core), Phase::Open) => Ok(core),
            _ => Err(Error::State {
                code: "ERR_CHANNEL_CLOSED",
                message: "the channel is closed".into(),
            }),
        }
    }

    /// The halves' state as [`bits`].
    pub(crate) fn state(&self) -> u32 {
        if self.phase != Phase::Open {
            return bits::CLOSED;
        }
        let mut state = 0;
        if self.read_ended {
            state |= bits::READ_ENDED;
        }
        if let Some(core) = &self.core {
            if core.end_requested() {
                state |= bits::WRITE_ENDING;
            }
            if core.write_done() {
                state |= bits::WRITE_ENDED;
            }
        }
        if self.ended_by_peer {
            state |= bits::ENDED_BY_PEER;
        }
        state
    }

    /// Checks that the descriptor still points to the socket we adopted (it may have been
    /// closed behind our back, and its number reused for something else).
    pub(crate) fn check_descriptor(&self) -> Result<(), Error> {
        match &self.core {
            Some(core) if !socket::identity(core.fd()).is_ok_and(|id| id == self.identity) => {
                Err(lost_descriptor(core.fd().as_raw_fd()))
            }
            _ => Ok(()),
        }
    }

    /// Makes the poll mask match what the channel needs now. Before libuv is asked to
    /// watch anything new, checks that the descriptor is still the socket we adopted:
    /// libuv aborts the process when epoll refuses a descriptor that was closed behind
    /// our back, so that must be found here first (EBADF).
    pub(crate) fn update_poll(&mut self) -> Result<(), Error> {
        let Some(core) = &self.core else {
            return Ok(());
        };
        let mut events = 0;
        let lingering = self.phase == Phase::Lingering;
        // A batch still being emitted (JS calling in from a listener) keeps the interest:
        // dropping and re-adding it would cost two epoll_ctl calls per message. Only a
        // batch left unfinished after its emit stops reading.
        let batch_waits = self.batch_open && self.emitting == 0;
        if self.phase == Phase::Open
            && self.reading
            && !batch_waits
            && self.pending.is_none()
            && !self.read_ended
            && !core.read_done()
        {
            events |= UV_READABLE;
        }
        if (self.write_blocked || lingering) && core.wants_write() {
            events |= UV_WRITABLE;
        }
        if events == self.events {
            return Ok(());
        }
        let fd = core.fd().as_raw_fd();
        if events != 0 {
            if let Err(e) = self.check_descriptor() {
                if let Some(poll) = &self.poll {
                    poll.set(0, on_poll);
                }
                self.events = 0;
                return Err(e);
            }
        }
        if self.poll.is_none() {
            // The first time this channel polls: a channel that never reads nor waits to
            // write never has a handle, and closes without waiting for the loop.
            self.poll = Some(self.new_poll(fd)?);
        }
        let Some(poll) = &self.poll else {
            return Ok(());
        };
        let rc = poll.set(events, on_poll);
        if rc != 0 {
            poll.set(0, on_poll);
            self.events = 0;
            return Err(Error::os(
                "uv_poll_start",
                Errno::from_raw(uv::status_errno(rc)),
            ));
        }
        self.events = events;
        Ok(())
    }

    fn new_poll(&mut self, fd: std::os::fd::RawFd) -> Result<Poll, Error> {
        let Some(strong) = self.this.upgrade() else {
            return Err(Error::State {
                code: "ERR_CHANNEL_CLOSED",
                message: "the channel is closed".into(),
            });
        };
        let data = Rc::into_raw(strong) as *mut c_void;
        // SAFETY: uv_loop is this environment's loop (napi_get_uv_event_loop at creation)
        // and we are on its thread.
        match unsafe { Poll::new(self.uv_loop, fd, data) } {
            Ok(poll) => {
                if !self.refed {
                    poll.set_ref(false);
                }
                Ok(poll)
            }
            Err(status) => {
                // SAFETY: the handle never took `data`: take the strong count back.
                drop(unsafe { Rc::from_raw(data as *const RefCell<Shared>) });
                let errno = Errno::from_raw(uv::status_errno(status));
                if errno == Errno::EEXIST {
                    // Another handle of this loop watches the descriptor: it belongs to
                    // something else (a net.Socket or net.Server), so never close it.
                    self.disowned = true;
                    return Err(Error::os_with_detail(
                        "uv_poll_init",
                        errno,
                        format!(
                            "descriptor {fd} is already watched by another handle of this \
                             event loop (a net.Socket or net.Server owns it): adopt a \
                             descriptor nothing else uses; it was left open"
                        ),
                    ));
                }
                Err(Error::os("uv_poll_init", errno))
            }
        }
    }

    /// `ref()` (true) or `unref()` (false).
    pub(crate) fn set_ref(&mut self, on: bool) {
        self.refed = on;
        if let Some(p) = &self.poll {
            p.set_ref(on);
        }
    }

    /// Runs a flushing operation (`flush` or `end`), remembers whether the socket was
    /// full, and updates the poll mask. Returns the flush status and whether this call is
    /// the one that finished the sending side (everything written and shut down).
    pub(crate) fn flush_with(
        &mut self,
        op: fn(&mut Core) -> Result<Flush, Error>,
    ) -> Result<(Flush, bool), Error> {
        let (status, finished) = self.core().and_then(|core| {
            let was_done = core.write_done();
            let status = op(core)?;
            Ok((status, !was_done && core.write_done()))
        })?;
        self.write_blocked = status == Flush::WouldBlock;
        self.update_poll()?;
        Ok((status, finished))
    }

    /// Stops watching entirely (a failed socket must not spin the loop).
    pub(crate) fn stop_polling(&mut self) {
        self.reading = false;
        if let Some(p) = &self.poll {
            p.set(0, on_poll);
        }
        self.events = 0;
    }
}

pub(crate) fn lost_descriptor(fd: i32) -> Error {
    Error::os_with_detail(
        "fstat",
        Errno::EBADF,
        format!(
            "the channel's descriptor {fd} was closed behind its back (or now points to \
             something else); close the channel, never its descriptor"
        ),
    )
}

pub(crate) fn busy() -> Error {
    Error::State {
        code: "ERR_INVALID_STATE",
        message: "the channel is busy in another call".into(),
    }
}

/// Registers the environment's cleanup hook, holding a strong count of the state.
pub(crate) fn register_cleanup_hook(
    shared: &SharedRef,
    env: sys::napi_env,
) -> Result<CleanupHook, Error> {
    let arg = Rc::into_raw(shared.clone());
    let mut handle: sys::napi_async_cleanup_hook_handle = ptr::null_mut();
    // SAFETY: env is live; on_env_teardown matches the hook signature; handle is an
    // out-pointer.
    let status = unsafe {
        sys::napi_add_async_cleanup_hook(
            env,
            Some(on_env_teardown),
            arg as *mut c_void,
            &mut handle,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: the hook was not registered: take its strong count back.
        drop(unsafe { Rc::from_raw(arg) });
        return Err(Error::Runtime("napi_add_async_cleanup_hook failed".into()));
    }
    Ok(CleanupHook { handle, arg })
}

/// Closes the channel. `graceful` (JS's `close()`): what the socket takes at once is
/// written, messages not begun are dropped, and a frame already begun is finished in the
/// background (lingering) before the socket closes. Otherwise (errors, teardown) it
/// closes now. Either way JS is done with it: its handlers are released and every
/// descriptor of a batch it had not taken is closed.
///
/// Returns the sequence number below which every message was written or is being
/// finished (the send callbacks of those succeed); None if it was closed already.
pub(crate) fn close(shared: &SharedRef, graceful: bool) -> Option<u64> {
    let Ok(mut s) = shared.try_borrow_mut() else {
        return None;
    };
    if s.phase == Phase::Closed || (s.phase == Phase::Lingering && graceful) {
        return None;
    }
    let mut written = s.core.as_ref().map_or(0, |c| c.oldest_unwritten());
    let inflight = s.inflight.take();
    s.batch_open = false;
    let mut handlers = s.handlers.take();
    if s.emitting > 0 {
        s.retired = handlers.take();
    }
    s.pending = None;
    s.reading = false;
    // A descriptor closed behind our back (its number perhaps reused) gets nothing more.
    if graceful && !s.teardown && s.check_descriptor().is_ok() {
        let linger = s.core.as_mut().is_some_and(|core| {
            let _ = core.flush(); // closing anyway: what the socket takes now goes
            written = core.oldest_unwritten();
            core.abandon_unstarted()
        });
        if linger {
            // The frame already begun is finished in the background: it counts as sent.
            written += 1;
            s.phase = Phase::Lingering;
            s.write_blocked = true;
            // Like net.Socket#end(), the process stays alive until the frame is written
            // (or the peer goes away); an exit now would cut it in half.
            if s.update_poll().is_ok() {
                drop(s);
                drop(inflight);
                drop(handlers);
                return Some(written);
            }
        }
    }
    s.phase = Phase::Closed;
    // During teardown with a poll handle, the hook is removed by the handle's close
    // callback (Node waits for that); otherwise it is removed here.
    let hook = if s.teardown && s.poll.is_some() {
        None
    } else {
        s.hook.take()
    };
    let poll = s.poll.take();
    let core = s.core.take();
    let identity = s.identity;
    let disowned = s.disowned;
    drop(s);
    if let Some(p) = poll {
        p.close(on_poll_closed); // libuv forgets the descriptor before it is closed
    }
    drop(inflight);
    if let Some(core) = core {
        let fd = (*core).into_fd();
        if disowned {
            registry::hand_back(fd, identity);
        } else {
            release_descriptor(fd, identity);
        }
    }
    drop(handlers);
    if let Some(hook) = hook {
        hook.remove();
    }
    Some(written)
}

/// Closes the socket — unless its number no longer points to the socket we adopted
/// (closed behind our back and perhaps reused): then it is not ours to close.
fn release_descriptor(fd: OwnedFd, identity: Identity) {
    if registry::release(fd.as_fd(), identity) {
        drop(fd);
    } else {
        let _ = fd.into_raw_fd();
    }
}

/// One step of lingering: write more of the started frame; once it is written (or the
/// peer is gone), close.
pub(crate) fn linger(shared: &SharedRef) {
    let done = match shared.try_borrow_mut() {
        Ok(mut s) => match s.core.as_mut().map(|c| c.flush()) {
            Some(Ok(Flush::WouldBlock)) => s.update_poll().is_err(),
            _ => true,
        },
        Err(_) => false,
    };
    if done {
        if let Ok(mut s) = shared.try_borrow_mut() {
            s.phase = Phase::Open; // let close() finish the job
        }
        close(shared, false);
    }
}

/// The environment is going away (worker exit, Electron reload): close now, and tell
/// Node we are done once libuv has released the poll handle.
unsafe extern "C" fn on_env_teardown(
    handle: sys::napi_async_cleanup_hook_handle,
    arg: *mut c_void,
) {
    // SAFETY: arg is the strong count given to the hook in `register_cleanup_hook`; it is
    // taken here, the hook running at most once.
    let shared = unsafe { Rc::from_raw(arg as *const RefCell<Shared>) };
    let has_poll = match shared.try_borrow_mut() {
        Ok(mut s) => {
            s.teardown = true;
            // The hook's strong count is now `shared`, dropped at the end of this call.
            s.hook = Some(CleanupHook {
                handle,
                arg: ptr::null(),
            });
            if s.phase == Phase::Lingering {
                s.phase = Phase::Open;
            }
            s.poll.is_some()
        }
        Err(_) => false,
    };
    close(&shared, false);
    if !has_poll {
        // Nothing asynchronous left to wait for (close removed the hook if it could).
        let hook = shared.try_borrow_mut().ok().and_then(|mut s| s.hook.take());
        if let Some(hook) = hook {
            hook.remove();
        }
    }
}

unsafe extern "C" fn on_poll_closed(handle: *mut uv::UvHandle) {
    // SAFETY: the handle's data is the strong count given to it in `start`; libuv calls
    // this once, after which the handle is ours to free.
    let shared = unsafe { Rc::from_raw(uv::handle_data(handle) as *const RefCell<Shared>) };
    // SAFETY: libuv is done with the handle.
    unsafe { uv::free_handle(handle) };
    let hook = match shared.try_borrow_mut() {
        Ok(mut s) if s.teardown => s.hook.take(),
        _ => None,
    };
    if let Some(hook) = hook {
        hook.remove();
    }
}
