//! `NativeChannel`: a [`ChannelCore`] wired to the calling environment's libuv loop, and
//! the native owner of a channel's life. The index.ts `Channel` shapes the public API on
//! top and reads the state from here.
//!
//! - [`shared`]: the state, the poll mask, closing, lingering and teardown;
//! - [`delivery`]: the poll callback, and batches handed to JS transactionally.

mod batch;
mod delivery;
mod shared;

use std::cell::RefCell;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::ptr;
use std::rc::Rc;

use napi::bindgen_prelude::{BufferSlice, Unknown};
use napi::{sys, Env, JsValue};
use napi_derive::napi;
use socketpair_core::channel::DIRECT_WRITE_BYTES;

use self::batch::Core;
use socketpair_core::socket::{self, SocketKind};
use socketpair_core::{peercred, Error};

use crate::js::{self, AsyncContext, Reference};
use crate::registry;
use crate::unix::{borrow, Credentials};
use crate::uv;
use shared::{bits, busy, Handlers, Phase, Shared, SharedRef};

/// `state` bit: the peer's end of stream has been delivered.
#[napi]
pub const STATE_READ_ENDED: u32 = bits::READ_ENDED;
/// `state` bit: `end()` was called.
#[napi]
pub const STATE_WRITE_ENDING: u32 = bits::WRITE_ENDING;
/// `state` bit: everything sent before `end()` is written and the sending side shut.
#[napi]
pub const STATE_WRITE_ENDED: u32 = bits::WRITE_ENDED;
/// `state` bit: the sending side was ended because the peer ended.
#[napi]
pub const STATE_ENDED_BY_PEER: u32 = bits::ENDED_BY_PEER;
/// `state` bit: closed.
#[napi]
pub const STATE_CLOSED: u32 = bits::CLOSED;

/// The native half of a `Channel`. Not part of the public API: use `Channel` from index.ts.
#[napi]
pub struct NativeChannel {
    shared: SharedRef,
}

#[napi]
impl NativeChannel {
    /// Adopts `fd` (it is ours once this returns) and calls `handlers`' functions, with
    /// `owner` as `this` and as the async resource, for what happens. If this throws,
    /// the descriptor is still the caller's: nothing closed it.
    #[napi(
        constructor,
        ts_args_type = "fd: number, maxMessageBytes: number, owner: object, handlers: { messages(data: Buffer | Buffer[], table: Buffer | null, count: number): boolean; drain(): void; end(): void; error(err: Error): void; finish(): void; refused(list: Array<number | Error>): void; written(oldestUnwritten: number): void }"
    )]
    pub fn new(
        env: Env,
        fd: i32,
        max_message_bytes: f64,
        owner: Unknown,
        handlers: Unknown,
    ) -> napi::Result<Self> {
        let raw_env = env.raw();
        borrow(&env, fd, "fd")?;
        let uv_loop = event_loop(raw_env).map_err(|e| js::throw(raw_env, e))?;
        let handlers = make_handlers(raw_env, owner.raw(), handlers.raw()).ok_or_else(|| {
            js::throw(
                raw_env,
                Error::InvalidArgument("handlers must be an object of functions".into()),
            )
        })?;
        // SAFETY: JS hands us this descriptor: from here on the channel owns it (index.ts
        // documents that Channel.fromFd takes ownership); it is not -1 (checked above).
        // On any failure below it is handed back (into_raw_fd), never closed.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let max = if max_message_bytes.is_finite() && max_message_bytes >= 0.0 {
            max_message_bytes as usize
        } else {
            0
        };
        let core = match Core::adopt(owned, max) {
            Ok(core) => core,
            Err((e, owned)) => {
                let _ = owned.into_raw_fd(); // the caller's again
                return Err(js::throw(raw_env, e));
            }
        };
        let identity =
            match socket::identity(core.fd()).and_then(|id| registry::claim(fd, id).map(|()| id)) {
                Ok(id) => id,
                Err(e) => {
                    let _ = core.into_fd().into_raw_fd();
                    return Err(js::throw(raw_env, e));
                }
            };
        let shared = Rc::new_cyclic(|this| {
            let mut s = Shared::new(raw_env, uv_loop, core, identity, this.clone());
            s.handlers = Some(Box::new(handlers));
            RefCell::new(s)
        });
        match shared::register_cleanup_hook(&shared, raw_env) {
            Ok(hook) => {
                if let Ok(mut s) = shared.try_borrow_mut() {
                    s.hook = Some(hook);
                }
            }
            Err(e) => {
                // Hand the descriptor back before closing the rest.
                if let Ok(mut s) = shared.try_borrow_mut() {
                    if let Some(core) = s.core.take() {
                        registry::hand_back(core.into_fd(), identity);
                    }
                }
                let _ = shared::close(&shared, false);
                return Err(js::throw(raw_env, e));
            }
        }
        Ok(NativeChannel { shared })
    }

    /// Sends (or queues) one message; returns the bytes now queued, or -1 when what was
    /// queued before went out during this call (JS then flushes, to report what a flush
    /// reports). The message's sequence number is the count of sends accepted before it.
    #[napi]
    pub fn send(&self, env: Env, data: BufferSlice, fds: Vec<i32>) -> napi::Result<f64> {
        let borrowed = fds
            .iter()
            .map(|&f| borrow(&env, f, "every passed descriptor"))
            .collect::<napi::Result<Vec<BorrowedFd<'_>>>>()?;
        self.with_state(&env, |s| {
            if s.ended_by_peer && s.core.as_ref().is_some_and(|c| c.end_requested()) {
                return Err(Error::State {
                    code: "ERR_CHANNEL_ENDED_BY_PEER",
                    message: "cannot send: the peer ended the channel, so this side ended \
                              too (allowHalfOpen is false); pass allowHalfOpen: true to keep \
                              sending after the peer's end"
                        .into(),
                });
            }
            let core = s.core()?;
            // A send that may write at once (the first of a turn, a large payload — after
            // what is queued — or a record carrying descriptors with nothing queued)
            // first checks that the number is still our socket; queued sends are checked
            // once per turn, by flush().
            let had_queue = core.wants_write();
            let stream = core.kind() == SocketKind::Stream;
            let large = stream && data.len() >= DIRECT_WRITE_BYTES;
            // The first message of a turn with nothing queued is written at once (the
            // request/response case: no queue, no flush); the rest of a burst queues and
            // goes out in one flush.
            let eager = stream && !had_queue && !s.wrote_this_turn;
            let direct = large || eager || (!had_queue && !stream && !borrowed.is_empty());
            if direct {
                s.check_descriptor()?;
            }
            if eager {
                s.wrote_this_turn = true;
            }
            let core = s.core()?;
            core.send_with(&data, &borrowed, eager)?;
            let queued = core.queued_bytes();
            // The queue went out inside this send: JS must look (callbacks, 'drain',
            // refused messages), as after a flush.
            Ok(if had_queue && queued == 0 {
                -1.0
            } else {
                queued as f64
            })
        })
    }

    /// Writes what is queued; returns the bytes still queued — or -1 when JS has more to
    /// look at (refused messages wait in `takeRefused()`, or this flush finished the
    /// sending side after `end()`). One call per turn in the common case.
    #[napi]
    pub fn flush(&self, env: Env) -> napi::Result<f64> {
        self.with_state(&env, |s| {
            s.wrote_this_turn = false;
            if !s
                .core
                .as_ref()
                .is_some_and(|c| c.wants_write() || c.end_requested())
            {
                // Nothing to write: no system call.
                return Ok(match s.core.as_ref() {
                    Some(c) if c.refused_count() > 0 => -1.0,
                    _ => 0.0,
                });
            }
            // Once per turn: never write into a socket that merely reused our number.
            s.check_descriptor()?;
            let (_, finished) = s.flush_with(Core::flush)?;
            Ok(match s.core.as_ref() {
                Some(c) if finished || c.refused_count() > 0 => -1.0,
                Some(c) => c.queued_bytes() as f64,
                None => 0.0,
            })
        })
    }

    /// Half-close after the queued writes (`by_peer`: because the peer ended); returns
    /// the bytes still queued.
    #[napi]
    pub fn end(&self, env: Env, by_peer: bool) -> napi::Result<f64> {
        self.with_state(&env, |s| {
            s.check_descriptor()?;
            if by_peer && !s.core()?.end_requested() {
                s.ended_by_peer = true;
            }
            s.flush_with(Core::end)?;
            Ok(s.core.as_ref().map_or(0.0, |c| c.queued_bytes() as f64))
        })
    }

    /// The messages the kernel refused since the last call, as `[id, error, id, error, …]`.
    #[napi(ts_return_type = "Array<number | Error>")]
    pub fn take_refused(&self, env: Env) -> napi::Result<Unknown<'_>> {
        let refused = match self.shared.try_borrow_mut() {
            Ok(mut s) => s
                .core
                .as_mut()
                .map(|c| c.take_refused())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let raw = env.raw();
        let list = delivery::refused_list(raw, refused).ok_or_else(|| {
            js::throw(
                raw,
                Error::os("napi_create_array", nix::errno::Errno::ENOMEM),
            )
        })?;
        // SAFETY: a live value of this call's scope.
        Ok(unsafe { Unknown::from_raw_unchecked(raw, list) })
    }

    /// Whether messages refused by the kernel wait in `takeRefused()`.
    #[napi(getter)]
    pub fn has_refused(&self) -> bool {
        self.shared
            .try_borrow()
            .is_ok_and(|s| s.core.as_ref().is_some_and(|c| c.refused_count() > 0))
    }

    /// The sequence number of the oldest message not yet written whole (every message
    /// before it has been handed to the kernel).
    #[napi(getter)]
    pub fn oldest_unwritten(&self) -> f64 {
        self.shared
            .try_borrow()
            .ok()
            .and_then(|s| s.core.as_ref().map(|c| c.oldest_unwritten() as f64))
            .unwrap_or(0.0)
    }

    /// Report the queue's progress (`written` handler) after writes made by the loop.
    #[napi]
    pub fn notify_written(&self, on: bool) {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            s.notify_written = on;
        }
    }

    /// The channel's state as `STATE_*` bits.
    #[napi(getter)]
    pub fn state(&self) -> u32 {
        self.shared.try_borrow().map_or(bits::CLOSED, |s| s.state())
    }

    #[napi(getter)]
    pub fn queued_bytes(&self) -> f64 {
        self.shared
            .try_borrow()
            .ok()
            .and_then(|s| s.core.as_ref().map(|c| c.queued_bytes() as f64))
            .unwrap_or(0.0)
    }

    #[napi(getter)]
    pub fn queued_fds(&self) -> f64 {
        self.shared
            .try_borrow()
            .ok()
            .and_then(|s| s.core.as_ref().map(|c| c.queued_fds() as f64))
            .unwrap_or(0.0)
    }

    /// 'stream', 'seqpacket' or 'dgram'.
    #[napi(getter)]
    pub fn kind(&self) -> String {
        let kind = self
            .shared
            .try_borrow()
            .ok()
            .and_then(|s| s.core.as_ref().map(|c| c.kind()));
        match kind {
            Some(SocketKind::Stream) => "stream",
            Some(SocketKind::Seqpacket) => "seqpacket",
            Some(SocketKind::Dgram) => "dgram",
            None => "closed",
        }
        .into()
    }

    /// Starts or stops reading (a listener, `pause()`/`resume()`, an iterator's
    /// backpressure).
    #[napi]
    pub fn set_reading(&self, env: Env, on: bool) -> napi::Result<()> {
        self.with_state(&env, |s| {
            if s.phase != Phase::Open {
                return Ok(());
            }
            s.reading = on;
            s.update_poll()
        })
    }

    /// JS has finished the batch in flight; returns true when the end of stream came
    /// behind it (throws the error that came behind it, having closed the channel).
    #[napi]
    pub fn settle(&self, env: Env) -> napi::Result<bool> {
        delivery::settle(&self.shared).map_err(|e| js::throw(env.raw(), e))
    }

    #[napi(js_name = "ref")]
    pub fn ref_(&self) {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            if s.phase == Phase::Open {
                s.set_ref(true);
            }
        }
    }

    #[napi]
    pub fn unref(&self) {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            s.set_ref(false);
        }
    }

    /// Closes: what the socket takes at once is written, messages not begun are dropped,
    /// a frame already begun is finished in the background; every descriptor the channel
    /// holds is closed.
    /// Returns the sequence number below which every message was written (or is being
    /// finished); -1 if it was closed already.
    #[napi]
    pub fn close(&self) -> f64 {
        shared::close(&self.shared, true).map_or(-1.0, |n| n as f64)
    }

    #[napi]
    pub fn peer_credentials(&self, env: Env) -> napi::Result<Credentials> {
        self.with_state(&env, |s| {
            s.check_descriptor()?;
            let c = peercred::peer_credentials(s.core()?.fd())?;
            Ok(Credentials {
                pid: c.pid,
                uid: c.uid,
                gid: c.gid,
            })
        })
    }

    fn with_state<T>(
        &self,
        env: &Env,
        f: impl FnOnce(&mut Shared) -> Result<T, Error>,
    ) -> napi::Result<T> {
        let raw = env.raw();
        let mut s = self
            .shared
            .try_borrow_mut()
            .map_err(|_| js::throw(raw, busy()))?;
        let result = f(&mut s).and_then(|v| s.update_poll().map(|()| v));
        result.map_err(|e| js::throw(raw, e))
    }
}

impl Drop for NativeChannel {
    /// The JS object was collected: close what is still open. A channel lingering to
    /// finish a frame is left to finish it (its poll handle keeps the state alive).
    fn drop(&mut self) {
        let lingering = self
            .shared
            .try_borrow()
            .is_ok_and(|s| s.phase == Phase::Lingering);
        if !lingering {
            let _ = shared::close(&self.shared, false);
        }
    }
}

/// The libuv loop of the calling environment.
fn event_loop(env: sys::napi_env) -> Result<*mut uv::UvLoop, Error> {
    let mut uv_loop: *mut uv::UvLoop = ptr::null_mut();
    // SAFETY: env is the live environment of this call; uv_loop is an out-pointer.
    if unsafe { sys::napi_get_uv_event_loop(env, &mut uv_loop) } != sys::Status::napi_ok
        || uv_loop.is_null()
    {
        return Err(Error::Runtime(
            "napi_get_uv_event_loop failed: no libuv event loop in this environment".into(),
        ));
    }
    Ok(uv_loop)
}

/// References to `owner` and to each function of `handlers`, and the async context.
fn make_handlers(
    env: sys::napi_env,
    owner: sys::napi_value,
    handlers: sys::napi_value,
) -> Option<Handlers> {
    let get = |name: &str| -> Option<Reference> {
        let key = std::ffi::CString::new(name).ok()?;
        let mut value: sys::napi_value = ptr::null_mut();
        // SAFETY: env and handlers are live; key is NUL-terminated; value an out-pointer.
        let ok = unsafe { sys::napi_get_named_property(env, handlers, key.as_ptr(), &mut value) }
            == sys::Status::napi_ok;
        let mut kind = sys::ValueType::napi_undefined;
        // SAFETY: as above.
        let is_fn = ok
            && unsafe { sys::napi_typeof(env, value, &mut kind) } == sys::Status::napi_ok
            && kind == sys::ValueType::napi_function;
        if is_fn {
            Reference::new(env, value)
        } else {
            None
        }
    };
    Some(Handlers {
        messages: get("messages")?,
        drain: get("drain")?,
        end: get("end")?,
        error: get("error")?,
        finish: get("finish")?,
        refused: get("refused")?,
        written: get("written")?,
        owner: Reference::new(env, owner)?,
        context: AsyncContext::new(env, owner, "socketpair.Channel")?,
    })
}
