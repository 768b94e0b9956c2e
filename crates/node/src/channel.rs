//! `NativeChannel`: a [`ChannelCore`] wired to the calling environment's libuv loop.
//!
//! Readiness arrives on the JS thread (a `uv_poll_t`, no thread hop). On readable we read
//! until EAGAIN or the budget, decode in Rust, and hand JS the whole batch in one call,
//! through `napi_make_callback` (so `process.nextTick` and promises run right after). We
//! poll for writable only while writes are queued, and never drop the readable interest
//! while doing so. The index.ts `Channel` shapes the public API on top.
//!
//! Ownership: the state lives in an `Rc<RefCell<Shared>>` held by the JS object, by the
//! poll handle (released in its close callback) and by the environment's async cleanup
//! hook (released when the hook is removed). No borrow is ever held while JS runs, so JS
//! may call anything — `close()` included — from inside a callback.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::ptr;
use std::rc::Rc;

use napi::bindgen_prelude::{BufferSlice, Unknown};
use napi::{sys, Env, JsValue};
use napi_derive::napi;
use nix::errno::Errno;
use socketpair_core::channel::{ChannelCore, ReadStatus};
use socketpair_core::frame::Message;
use socketpair_core::socket::SocketKind;
use socketpair_core::write_queue::Flush;
use socketpair_core::{peercred, Error};

use crate::unix::{borrow, throw, Credentials};
use crate::uv::{self, Poll, UV_READABLE, UV_WRITABLE};

/// recvmsg calls per readable wake-up, so that one busy peer cannot starve the loop.
const READS_PER_WAKEUP: usize = 32;

// The event kinds passed to the JS callback as its first argument.
const EVENT_MESSAGES: u32 = 1;
const EVENT_DRAIN: u32 = 2;
const EVENT_END: u32 = 3;
const EVENT_ERROR: u32 = 4;
const EVENT_FINISH: u32 = 5;

struct Shared {
    env: sys::napi_env,
    core: Option<ChannelCore>,
    poll: Option<Poll>,
    events: c_int,
    reading: bool,
    callback: sys::napi_ref,
    async_ctx: sys::napi_async_context,
    cleanup: sys::napi_async_cleanup_hook_handle,
    /// Set when the environment's cleanup hook closed us: remove the hook once the poll
    /// handle has finished closing.
    teardown: bool,
    closed: bool,
    /// The last flush stopped at EAGAIN: poll for writable until a flush completes.
    /// (Sends are flushed from JS at the end of the turn; watching for writable only
    /// when the socket is actually full saves two epoll_ctl calls per send.)
    write_blocked: bool,
}

type SharedRef = Rc<RefCell<Shared>>;

impl Shared {
    /// Makes the poll mask match what the channel needs now.
    fn update_poll(&mut self) {
        let Some(core) = &self.core else { return };
        let mut events = 0;
        if self.reading && !core.read_done() {
            events |= UV_READABLE;
        }
        if self.write_blocked && core.wants_write() {
            events |= UV_WRITABLE;
        }
        if events != self.events {
            if let Some(poll) = &self.poll {
                poll.set(events, on_poll);
            }
            self.events = events;
        }
    }

    /// Runs a flushing operation (`flush` or `end`), remembers whether the socket was
    /// full, and updates the poll mask. Returns the flush status and whether this call is
    /// the one that finished the sending side (everything written and shut down).
    fn flush_with(
        &mut self,
        op: fn(&mut ChannelCore) -> Result<Flush, Error>,
    ) -> Result<(Flush, bool), Error> {
        let result = self.core().and_then(|core| {
            let was_done = core.write_done();
            let status = op(core)?;
            Ok((status, !was_done && core.write_done()))
        });
        if let Ok((status, _)) = &result {
            self.write_blocked = *status == Flush::WouldBlock;
        }
        self.update_poll();
        result
    }

    fn core(&mut self) -> Result<&mut ChannelCore, Error> {
        self.core.as_mut().ok_or_else(|| Error::State {
            code: "ERR_CHANNEL_CLOSED",
            message: "the channel is closed".into(),
        })
    }
}

/// The native half of a `Channel`. Not part of the public API: use `Channel` from index.ts.
#[napi]
pub struct NativeChannel {
    shared: SharedRef,
}

#[napi]
impl NativeChannel {
    /// Adopts `fd` (it is ours once this returns) and starts reading; `callback(kind, a,
    /// b)` receives the events. If this throws, the descriptor is still the caller's:
    /// nothing closed it.
    #[napi(constructor)]
    pub fn new(env: Env, fd: i32, max_message_bytes: f64, callback: Unknown) -> napi::Result<Self> {
        borrow(&env, fd, "fd")?;
        let raw_env = env.raw();
        let callback_ref = create_ref(raw_env, callback.raw()).map_err(|e| throw(&env, e))?;
        let async_ctx = match create_async_context(raw_env) {
            Ok(ctx) => ctx,
            Err(e) => {
                delete_ref(raw_env, callback_ref);
                return Err(throw(&env, e));
            }
        };
        // SAFETY: JS hands us this descriptor: from here on the channel owns it (index.ts
        // documents that Channel.fromFd takes ownership); it is not -1 (checked above).
        // On failure below it is handed back (into_raw_fd), never closed: adopt() checks
        // that it is a socket (ENOTSOCK, EBADF) and returns it with the error.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let max = if max_message_bytes.is_finite() && max_message_bytes >= 0.0 {
            max_message_bytes as usize
        } else {
            0
        };
        let core = match ChannelCore::adopt(owned, max) {
            Ok(core) => core,
            Err((e, owned)) => {
                let _ = owned.into_raw_fd(); // the caller's again
                delete_ref(raw_env, callback_ref);
                // SAFETY: ctx came from napi_async_init above and is destroyed once.
                unsafe { sys::napi_async_destroy(raw_env, async_ctx) };
                return Err(throw(&env, e));
            }
        };
        let shared = Rc::new(RefCell::new(Shared {
            env: raw_env,
            core: Some(core),
            poll: None,
            events: 0,
            reading: false,
            callback: callback_ref,
            async_ctx,
            cleanup: ptr::null_mut(),
            teardown: false,
            closed: false,
            write_blocked: false,
        }));
        let this = NativeChannel { shared };
        if let Err(e) = this.start(raw_env) {
            // Hand the descriptor back before closing the rest.
            if let Ok(mut s) = this.shared.try_borrow_mut() {
                if let Some(core) = s.core.take() {
                    let _ = core.into_fd().into_raw_fd();
                }
            }
            close_now(&this.shared);
            return Err(throw(&env, e));
        }
        Ok(this)
    }

    fn start(&self, env: sys::napi_env) -> Result<(), Error> {
        let mut loop_: *mut uv::UvLoop = ptr::null_mut();
        // SAFETY: env is the live environment of this call; loop_ is an out-pointer.
        if unsafe { sys::napi_get_uv_event_loop(env, &mut loop_) } != sys::Status::napi_ok
            || loop_.is_null()
        {
            return Err(Error::Unsupported(
                "no libuv event loop in this environment".into(),
            ));
        }
        let mut s = self.shared.try_borrow_mut().map_err(|_| busy())?;
        let fd = s.core()?.fd().as_raw_fd();
        let data = Rc::into_raw(self.shared.clone()) as *mut c_void;
        // SAFETY: loop_ is this environment's loop and we are on its thread.
        let poll = match unsafe { Poll::new(loop_, fd, data) } {
            Ok(p) => p,
            Err(status) => {
                // SAFETY: the handle never took `data`: take the strong count back.
                drop(unsafe { Rc::from_raw(data as *const RefCell<Shared>) });
                return Err(Error::os(
                    "uv_poll_init",
                    Errno::from_raw(uv::status_errno(status)),
                ));
            }
        };
        s.poll = Some(poll);
        let hook_arg = Rc::into_raw(self.shared.clone()) as *mut c_void;
        let mut handle: sys::napi_async_cleanup_hook_handle = ptr::null_mut();
        // SAFETY: env is live; on_env_teardown matches the hook signature; handle is an
        // out-pointer.
        let status = unsafe {
            sys::napi_add_async_cleanup_hook(env, Some(on_env_teardown), hook_arg, &mut handle)
        };
        if status != sys::Status::napi_ok {
            // SAFETY: the hook was not registered: take its strong count back.
            drop(unsafe { Rc::from_raw(hook_arg as *const RefCell<Shared>) });
            return Err(Error::Unsupported(
                "napi_add_async_cleanup_hook failed".into(),
            ));
        }
        s.cleanup = handle;
        s.update_poll();
        Ok(())
    }

    /// Sends (or queues) one message; returns the bytes now queued.
    #[napi]
    pub fn send(&self, env: Env, data: BufferSlice, fds: Vec<i32>) -> napi::Result<f64> {
        let borrowed = fds
            .iter()
            .map(|&f| borrow(&env, f, "every passed descriptor"))
            .collect::<napi::Result<Vec<BorrowedFd<'_>>>>()?;
        self.with_core(&env, |core| {
            core.send(&data, &borrowed)?;
            Ok(core.queued_bytes() as f64)
        })
    }

    /// Writes what is queued; returns the bytes still queued.
    #[napi]
    pub fn flush(&self, env: Env) -> napi::Result<f64> {
        self.with_flush(&env, ChannelCore::flush)
    }

    /// Half-close after the queued writes; returns the bytes still queued.
    #[napi]
    pub fn end(&self, env: Env) -> napi::Result<f64> {
        self.with_flush(&env, ChannelCore::end)
    }

    /// Runs `flush` or `end` for JS; returns the bytes still queued.
    fn with_flush(
        &self,
        env: &Env,
        op: fn(&mut ChannelCore) -> Result<Flush, Error>,
    ) -> napi::Result<f64> {
        let mut s = self
            .shared
            .try_borrow_mut()
            .map_err(|_| throw(env, busy()))?;
        s.flush_with(op).map_err(|e| throw(env, e))?;
        Ok(s.core.as_ref().map_or(0.0, |c| c.queued_bytes() as f64))
    }

    /// True once `end()` has taken effect: everything written and the sending side shut.
    #[napi(getter)]
    pub fn finished(&self) -> bool {
        self.shared
            .try_borrow()
            .is_ok_and(|s| s.core.as_ref().is_some_and(|c| c.write_done()))
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

    #[napi(getter)]
    pub fn max_message_bytes(&self) -> f64 {
        self.shared
            .try_borrow()
            .ok()
            .and_then(|s| s.core.as_ref().map(|c| c.max_message_bytes() as f64))
            .unwrap_or(0.0)
    }

    /// Starts or stops reading (backpressure from a slow consumer).
    #[napi]
    pub fn set_reading(&self, on: bool) {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            s.reading = on;
            s.update_poll();
        }
    }

    #[napi(js_name = "ref")]
    pub fn ref_(&self) {
        if let Ok(s) = self.shared.try_borrow() {
            if let Some(p) = &s.poll {
                p.set_ref(true);
            }
        }
    }

    #[napi]
    pub fn unref(&self) {
        if let Ok(s) = self.shared.try_borrow() {
            if let Some(p) = &s.poll {
                p.set_ref(false);
            }
        }
    }

    /// Stops polling, then closes the socket (and every descriptor still queued).
    #[napi]
    pub fn close(&self) {
        close_now(&self.shared);
    }

    #[napi]
    pub fn peer_credentials(&self, env: Env) -> napi::Result<Credentials> {
        self.with_core(&env, |core| {
            let c = peercred::peer_credentials(core.fd())?;
            Ok(Credentials {
                pid: c.pid,
                uid: c.uid,
                gid: c.gid,
            })
        })
    }

    fn with_core<T>(
        &self,
        env: &Env,
        f: impl FnOnce(&mut ChannelCore) -> Result<T, Error>,
    ) -> napi::Result<T> {
        let mut s = self
            .shared
            .try_borrow_mut()
            .map_err(|_| throw(env, busy()))?;
        let result = s.core().and_then(f);
        s.update_poll();
        result.map_err(|e| throw(env, e))
    }
}

impl Drop for NativeChannel {
    fn drop(&mut self) {
        close_now(&self.shared);
    }
}

fn busy() -> Error {
    Error::State {
        code: "ERR_INVALID_STATE",
        message: "the channel is busy in another call".into(),
    }
}

/// Closes everything, once: the poll handle first (libuv forgets the descriptor), then
/// the socket and every queued descriptor, then the JS references.
fn close_now(shared: &SharedRef) {
    let Ok(mut s) = shared.try_borrow_mut() else {
        return;
    };
    if s.closed {
        return;
    }
    s.closed = true;
    let env = s.env;
    // During teardown with a poll handle, the hook is removed by the handle's close
    // callback (Node waits for that); otherwise it is removed here.
    let remove_hook_now = !(s.teardown && s.poll.is_some());
    let cleanup = if remove_hook_now {
        std::mem::replace(&mut s.cleanup, ptr::null_mut())
    } else {
        ptr::null_mut()
    };
    let poll = s.poll.take();
    let core = s.core.take();
    let callback = std::mem::replace(&mut s.callback, ptr::null_mut());
    let ctx = std::mem::replace(&mut s.async_ctx, ptr::null_mut());
    drop(s);
    if let Some(p) = poll {
        p.close(on_poll_closed);
    }
    drop(core);
    delete_ref(env, callback);
    if !ctx.is_null() {
        // SAFETY: ctx came from napi_async_init in this environment and is destroyed once.
        unsafe { sys::napi_async_destroy(env, ctx) };
    }
    if !cleanup.is_null() {
        remove_cleanup_hook(cleanup);
    }
}

fn remove_cleanup_hook(handle: sys::napi_async_cleanup_hook_handle) {
    // SAFETY: handle came from napi_add_async_cleanup_hook and is removed exactly once:
    // close_now and on_poll_closed take it out of Shared before calling this.
    unsafe { sys::napi_remove_async_cleanup_hook(handle) };
}

/// The environment is going away (worker exit, Electron reload): close, and tell Node
/// we are done once libuv has released the poll handle.
unsafe extern "C" fn on_env_teardown(
    handle: sys::napi_async_cleanup_hook_handle,
    arg: *mut c_void,
) {
    // SAFETY: arg is the strong count given to the hook in `start`; it is released here,
    // the hook running at most once.
    let shared = unsafe { Rc::from_raw(arg as *const RefCell<Shared>) };
    let has_poll = match shared.try_borrow_mut() {
        Ok(mut s) => {
            s.teardown = true;
            s.cleanup = handle;
            s.poll.is_some()
        }
        Err(_) => false,
    };
    close_now(&shared);
    if !has_poll {
        // Nothing asynchronous left to wait for (close_now removed the hook if it could).
        if let Ok(mut s) = shared.try_borrow_mut() {
            let h = std::mem::replace(&mut s.cleanup, ptr::null_mut());
            if !h.is_null() {
                remove_cleanup_hook(h);
            }
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
        Ok(mut s) if s.teardown => std::mem::replace(&mut s.cleanup, ptr::null_mut()),
        _ => ptr::null_mut(),
    };
    if !hook.is_null() {
        remove_cleanup_hook(hook);
    }
}

unsafe extern "C" fn on_poll(handle: *mut uv::UvHandle, status: c_int, events: c_int) {
    // SAFETY: the handle holds a strong count until on_poll_closed; take another for the
    // length of this callback so that a close() from JS cannot free the state under us.
    let shared = unsafe {
        let ptr = uv::handle_data(handle) as *const RefCell<Shared>;
        Rc::increment_strong_count(ptr);
        Rc::from_raw(ptr)
    };
    let Ok(env) = shared.try_borrow().map(|s| s.env) else {
        return;
    };
    let mut scope: sys::napi_handle_scope = ptr::null_mut();
    // SAFETY: we are on the environment's thread, outside any JS frame: a handle scope
    // must exist for the values we create.
    if unsafe { sys::napi_open_handle_scope(env, &mut scope) } != sys::Status::napi_ok {
        return;
    }
    dispatch(&shared, env, status, events);
    // SAFETY: the scope opened above.
    unsafe { sys::napi_close_handle_scope(env, scope) };
}

fn dispatch(shared: &SharedRef, env: sys::napi_env, status: c_int, events: c_int) {
    if status < 0 {
        stop_and_report(
            shared,
            env,
            Error::os("poll", Errno::from_raw(uv::status_errno(status))),
        );
        return;
    }
    if events & UV_WRITABLE != 0 {
        let flushed = {
            let Ok(mut s) = shared.try_borrow_mut() else {
                return;
            };
            s.flush_with(ChannelCore::flush)
        };
        match flushed {
            Err(e) => {
                stop_and_report(shared, env, e);
                return;
            }
            Ok((flush, finished)) => {
                if flush == Flush::Done && !emit(shared, env, EVENT_DRAIN, &[]) {
                    return;
                }
                if finished && !emit(shared, env, EVENT_FINISH, &[]) {
                    return;
                }
            }
        }
    }
    if events & UV_READABLE != 0 {
        let (messages, result) = {
            let Ok(mut s) = shared.try_borrow_mut() else {
                return;
            };
            if !s.reading {
                return;
            }
            let mut out = Vec::new();
            let result = s.core().and_then(|c| c.read(READS_PER_WAKEUP, &mut out));
            if matches!(result, Ok(ReadStatus::Eof)) {
                s.update_poll();
            }
            (out, result)
        };
        if !messages.is_empty() && !emit_messages(shared, env, messages) {
            return;
        }
        match result {
            Ok(ReadStatus::Eof) => {
                emit(shared, env, EVENT_END, &[]);
            }
            Ok(_) => {}
            Err(e) => stop_and_report(shared, env, e),
        }
    }
}

/// Stops all polling (so a failed socket cannot spin the loop) and reports the error;
/// index.ts then closes the channel.
fn stop_and_report(shared: &SharedRef, env: sys::napi_env, e: Error) {
    if let Ok(mut s) = shared.try_borrow_mut() {
        s.reading = false;
        if let Some(p) = &s.poll {
            p.set(0, on_poll);
        }
        s.events = 0;
    }
    let code = string_value(env, &e.code());
    let message = string_value(env, &e.to_string());
    if let (Some(code), Some(message)) = (code, message) {
        emit(shared, env, EVENT_ERROR, &[code, message]);
    }
}

/// Hands a batch to JS: one buffer with every payload back to back, a Uint32 table (per
/// message its length and descriptor count, then all the descriptors in order), and the
/// number of messages.
fn emit_messages(shared: &SharedRef, env: sys::napi_env, messages: Vec<Message>) -> bool {
    if let [only] = messages.as_slice() {
        if only.fds.is_empty() {
            // The common request/response case: no table, just the payload.
            return emit_single(shared, env, &only.data);
        }
    }
    let total: usize = messages.iter().map(|m| m.data.len()).sum();
    let mut table: Vec<u32> = Vec::with_capacity(messages.len() * 2);
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in &messages {
        table.push(m.data.len() as u32);
        table.push(m.fds.len() as u32);
    }
    let mut data_ptr: *mut c_void = ptr::null_mut();
    let mut data: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; out-pointers are valid. The buffer is allocated
    // by Node (JS memory), never an external buffer over Rust memory.
    if unsafe { sys::napi_create_buffer(env, total.max(1), &mut data_ptr, &mut data) }
        != sys::Status::napi_ok
        || data_ptr.is_null()
    {
        stop_and_report(shared, env, Error::os("napi_create_buffer", Errno::ENOMEM));
        return false;
    }
    let mut offset = 0;
    let mut fd_table: Vec<u32> = Vec::new();
    for m in messages {
        // SAFETY: data_ptr has `total` bytes; the payloads add up to `total`.
        unsafe {
            ptr::copy_nonoverlapping(
                m.data.as_ptr(),
                data_ptr.cast::<u8>().add(offset),
                m.data.len(),
            )
        };
        offset += m.data.len();
        for fd in m.fds {
            fd_table.push(fd.as_raw_fd() as u32);
            fds.push(fd);
        }
    }
    table.extend_from_slice(&fd_table);
    let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let mut table_ptr: *mut c_void = ptr::null_mut();
    let mut table_value: sys::napi_value = ptr::null_mut();
    // SAFETY: as above; the copy is Node-allocated memory.
    if unsafe {
        sys::napi_create_buffer_copy(
            env,
            bytes.len(),
            bytes.as_ptr().cast(),
            &mut table_ptr,
            &mut table_value,
        )
    } != sys::Status::napi_ok
    {
        stop_and_report(
            shared,
            env,
            Error::os("napi_create_buffer_copy", Errno::ENOMEM),
        );
        return false; // `fds` drops here: nothing leaks
    }
    let Some(count_value) = u32_value(env, (table.len() - fd_table.len()) as u32 / 2) else {
        return false; // `fds` drops here: nothing leaks
    };
    // From here JS owns the descriptors (index.ts closes any it does not deliver).
    for fd in fds {
        let _ = fd.into_raw_fd();
    }
    emit(
        shared,
        env,
        EVENT_MESSAGES,
        &[data, table_value, count_value],
    )
}

/// One message without descriptors: `(EVENT_MESSAGES, data, null, 1)`.
fn emit_single(shared: &SharedRef, env: sys::napi_env, payload: &[u8]) -> bool {
    let mut data_ptr: *mut c_void = ptr::null_mut();
    let mut data: sys::napi_value = ptr::null_mut();
    let mut null: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; out-pointers are valid; the copy is
    // Node-allocated memory.
    let ok = unsafe {
        sys::napi_create_buffer_copy(
            env,
            payload.len(),
            payload.as_ptr().cast(),
            &mut data_ptr,
            &mut data,
        ) == sys::Status::napi_ok
            && sys::napi_get_null(env, &mut null) == sys::Status::napi_ok
    };
    if !ok {
        stop_and_report(
            shared,
            env,
            Error::os("napi_create_buffer_copy", Errno::ENOMEM),
        );
        return false;
    }
    let Some(one) = u32_value(env, 1) else {
        return false;
    };
    emit(shared, env, EVENT_MESSAGES, &[data, null, one])
}

/// Calls the JS callback with `(kind, ...args)` inside a callback scope. Returns false
/// when the channel was closed (by the callback or before it).
fn emit(shared: &SharedRef, env: sys::napi_env, kind: u32, args: &[sys::napi_value]) -> bool {
    let (callback, ctx) = match shared.try_borrow() {
        Ok(s) if !s.closed => (s.callback, s.async_ctx),
        _ => return false,
    };
    let mut func: sys::napi_value = ptr::null_mut();
    let mut recv: sys::napi_value = ptr::null_mut();
    let Some(kind_value) = u32_value(env, kind) else {
        return false;
    };
    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(kind_value);
    argv.extend_from_slice(args);
    // SAFETY: env is live on this thread, callback a live reference, out-pointers valid.
    let status = unsafe {
        if sys::napi_get_reference_value(env, callback, &mut func) != sys::Status::napi_ok
            // napi_make_callback wants an object as `this`: the global, as Node's own callbacks.
            || sys::napi_get_global(env, &mut recv) != sys::Status::napi_ok
        {
            return false;
        }
        let mut result: sys::napi_value = ptr::null_mut();
        sys::napi_make_callback(env, ctx, recv, func, argv.len(), argv.as_ptr(), &mut result)
    };
    if status == sys::Status::napi_pending_exception {
        // A listener threw: report it as Node does for any callback from the loop
        // ('uncaughtException'), instead of losing it.
        let mut exception: sys::napi_value = ptr::null_mut();
        // SAFETY: an exception is pending in this environment.
        unsafe {
            if sys::napi_get_and_clear_last_exception(env, &mut exception) == sys::Status::napi_ok {
                sys::napi_fatal_exception(env, exception);
            }
        }
    }
    shared.try_borrow().map(|s| !s.closed).unwrap_or(false)
}

fn u32_value(env: sys::napi_env, v: u32) -> Option<sys::napi_value> {
    let mut out: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; out is an out-pointer.
    (unsafe { sys::napi_create_uint32(env, v, &mut out) } == sys::Status::napi_ok).then_some(out)
}

fn string_value(env: sys::napi_env, s: &str) -> Option<sys::napi_value> {
    let mut out: sys::napi_value = ptr::null_mut();
    // SAFETY: s is valid UTF-8 of the given length; out is an out-pointer.
    (unsafe { sys::napi_create_string_utf8(env, s.as_ptr().cast(), s.len() as isize, &mut out) }
        == sys::Status::napi_ok)
        .then_some(out)
}

fn create_ref(env: sys::napi_env, value: sys::napi_value) -> Result<sys::napi_ref, Error> {
    let mut r: sys::napi_ref = ptr::null_mut();
    // SAFETY: env and value are live for this call; r is an out-pointer.
    if unsafe { sys::napi_create_reference(env, value, 1, &mut r) } != sys::Status::napi_ok {
        return Err(Error::InvalidArgument("callback must be a function".into()));
    }
    Ok(r)
}

fn delete_ref(env: sys::napi_env, r: sys::napi_ref) {
    if !r.is_null() {
        // SAFETY: r came from napi_create_reference in env and is deleted once (callers
        // take it out of Shared first).
        unsafe { sys::napi_delete_reference(env, r) };
    }
}

fn create_async_context(env: sys::napi_env) -> Result<sys::napi_async_context, Error> {
    let name = "socketpair.Channel";
    let mut resource: sys::napi_value = ptr::null_mut();
    let mut resource_name: sys::napi_value = ptr::null_mut();
    let mut ctx: sys::napi_async_context = ptr::null_mut();
    // SAFETY: env is live; the name is valid UTF-8 of the given length; out-pointers valid.
    let ok = unsafe {
        sys::napi_create_object(env, &mut resource) == sys::Status::napi_ok
            && sys::napi_create_string_utf8(
                env,
                name.as_ptr().cast(),
                name.len() as isize,
                &mut resource_name,
            ) == sys::Status::napi_ok
            && sys::napi_async_init(env, resource, resource_name, &mut ctx) == sys::Status::napi_ok
    };
    if ok {
        Ok(ctx)
    } else {
        Err(Error::Unsupported("napi_async_init failed".into()))
    }
}
