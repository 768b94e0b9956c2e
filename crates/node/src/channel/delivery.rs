//! From the poll handle to JS: readiness arrives on the JS thread (a `uv_poll_t`, no
//! thread hop); we write what is queued, read until EAGAIN or the budget, decode in Rust,
//! and hand JS the whole batch in one call through `napi_make_callback` (so
//! `process.nextTick` and promises run right after).
//!
//! A batch is delivered transactionally. Its descriptors stay owned here ([`Inflight`])
//! until JS has taken each message: before it emits message `i`, JS writes `i + 1` into
//! the first word of the batch's table (the cursor). JS returns `true` once every
//! message has been emitted; anything else — a listener that threw, `pause()`, no
//! listener left, a worker terminated mid-batch — leaves the batch in flight: nothing
//! more is read (the peer feels backpressure) until JS finishes it and calls `settle()`.
//! Whenever the batch ends otherwise (close, teardown), the descriptors of the messages
//! JS never took are closed here. So every descriptor is delivered or closed, once.

use std::cell::RefCell;
use std::ffi::c_int;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::ptr;
use std::rc::Rc;

use napi::sys;
use nix::errno::Errno;
use socketpair_core::channel::ReadStatus;
use socketpair_core::write_queue::{Flush, Refused};
use socketpair_core::Error;

use super::batch::{self, Batch, Core};
use super::shared::{self, Phase, Shared, SharedRef};
use crate::js::{self, HandleScope, Reference};
use crate::uv::{self, UV_READABLE, UV_WRITABLE};

/// recvmsg calls per readable wake-up, so that one busy peer cannot starve the loop.
const READS_PER_WAKEUP: usize = 32;

/// What was found behind a batch: reported once JS has finished the batch.
pub(crate) enum Pending {
    End,
    Failed(Error),
}

/// A batch JS has been handed and has not finished: the descriptors of its messages, and
/// where JS records how many messages it has taken.
pub(crate) struct Inflight {
    /// Every descriptor of the batch, in message order.
    fds: Vec<OwnedFd>,
    /// How many descriptors each message carries (empty when the batch has none).
    per_message: Vec<u32>,
    /// The table buffer JS writes the cursor into (its first u32), kept alive by the
    /// reference; None when the batch carries no descriptors.
    cursor: Option<(Reference, *const u8)>,
}

impl Inflight {
    /// How many messages JS has taken (the cursor it wrote), at most the batch's size.
    fn taken(&self) -> usize {
        match &self.cursor {
            Some((_, at)) => {
                // SAFETY: the pointer is to the first 4 bytes of the table buffer, which
                // the reference keeps alive (Node never moves a buffer's bytes).
                let word = unsafe { ptr::read_unaligned(at.cast::<u32>()) };
                (word as usize).min(self.per_message.len())
            }
            None => self.per_message.len(),
        }
    }
}

impl Drop for Inflight {
    /// The descriptors of the messages JS took are its own now; the rest are closed.
    fn drop(&mut self) {
        let taken: usize = self.per_message[..self.taken()]
            .iter()
            .map(|&n| n as usize)
            .sum();
        for fd in self.fds.drain(..taken.min(self.fds.len())) {
            let _ = fd.into_raw_fd();
        }
        // The remaining OwnedFds close as the vector drops.
    }
}

pub(crate) unsafe extern "C" fn on_poll(handle: *mut uv::UvHandle, status: c_int, events: c_int) {
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
    // Values we create need a scope: we are outside any JS frame.
    let Some(_scope) = HandleScope::open(env) else {
        return;
    };
    dispatch(&shared, env, status, events);
}

fn dispatch(shared: &SharedRef, env: sys::napi_env, status: c_int, mut events: c_int) {
    let (phase, wants_write) = {
        let Ok(mut s) = shared.try_borrow_mut() else {
            return;
        };
        s.wrote_this_turn = false;
        if status < 0 {
            // libuv reports POLLERR (a pending socket error, such as a peer that closed
            // with data unread) as a status and stops watching. Data may still be
            // waiting: read and write as if ready, and let the calls say what happened.
            s.events = 0;
            events = UV_READABLE | UV_WRITABLE;
        }
        let wants = s.core.as_ref().is_some_and(|c| c.wants_write());
        (s.phase, wants)
    };
    if phase == Phase::Lingering {
        shared::linger(shared);
        return;
    }
    if events & UV_WRITABLE != 0 && wants_write && !on_writable(shared, env) {
        return;
    }
    if events & UV_READABLE != 0 {
        read_and_deliver(shared, env);
    }
    let updated = match shared.try_borrow_mut() {
        Ok(mut s) => s.update_poll(),
        Err(_) => Ok(()),
    };
    if let Err(e) = updated {
        fail(shared, env, e);
    }
}

/// Writes what is queued. Returns false once the channel is closed.
fn on_writable(shared: &SharedRef, env: sys::napi_env) -> bool {
    let (flushed, refused, written, notify) = {
        let Ok(mut s) = shared.try_borrow_mut() else {
            return false;
        };
        let flushed = s.flush_with(Core::flush);
        let (refused, written) = match s.core.as_mut() {
            Some(core) => (core.take_refused(), core.oldest_unwritten()),
            None => (Vec::new(), 0),
        };
        (flushed, refused, written, s.notify_written)
    };
    if !refused.is_empty() {
        // All at once: JS takes every refused message off its callback list before any
        // listener runs (a listener may close the channel, which settles the rest).
        if let Some(list) = refused_list(env, refused) {
            emit(shared, env, |h| &h.refused, &[list]);
            if is_closed(shared) {
                return false;
            }
        }
    }
    if notify {
        if let Some(n) = js::f64_value(env, written as f64) {
            emit(shared, env, |h| &h.written, &[n]);
        }
    }
    match flushed {
        Err(e) => {
            fail(shared, env, e);
            false
        }
        Ok((status, finished)) => {
            if status == Flush::Done {
                emit(shared, env, |h| &h.drain, &[]);
            }
            if finished {
                emit(shared, env, |h| &h.finish, &[]);
            }
            !is_closed(shared)
        }
    }
}

/// Refused messages as JS sees them: `[id, error, id, error, …]`.
pub(crate) fn refused_list(env: sys::napi_env, refused: Vec<Refused>) -> Option<sys::napi_value> {
    let mut list: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; list is an out-pointer.
    if unsafe { sys::napi_create_array(env, &mut list) } != sys::Status::napi_ok {
        return None;
    }
    let mut index = 0;
    for r in refused {
        let (Some(id), Some(err)) = (
            js::f64_value(env, r.id as f64),
            js::error_value(env, &r.error),
        ) else {
            continue;
        };
        // SAFETY: list, id and err are live values of this scope.
        unsafe {
            sys::napi_set_element(env, list, index, id);
            sys::napi_set_element(env, list, index + 1, err);
        }
        index += 2;
    }
    Some(list)
}

/// Reads one round and hands JS what it got, then the end of stream or the error found
/// behind it — at once if JS finished the batch, else when it does (`settle()`).
pub(crate) fn read_and_deliver(shared: &SharedRef, env: sys::napi_env) {
    let (messages, pending) = {
        let Ok(mut s) = shared.try_borrow_mut() else {
            return;
        };
        if s.phase != Phase::Open
            || !s.reading
            || s.batch_open
            || s.pending.is_some()
            || s.read_ended
        {
            return;
        }
        let mut out = Batch::new(env);
        let result = match s.core() {
            Ok(core) => batch::with_read_buffer(|buf| core.read(READS_PER_WAKEUP, buf, &mut out)),
            Err(_) => return,
        };
        let pending = match result {
            Ok(ReadStatus::Eof) => Some(Pending::End),
            Ok(_) => None,
            Err(e) => Some(Pending::Failed(e)),
        };
        (out, pending)
    };
    if let Some(p) = pending {
        if let Ok(mut s) = shared.try_borrow_mut() {
            s.pending = Some(p);
            let _ = s.update_poll(); // stop reading; the pending event decides what is next
        }
    }
    if !messages.is_empty() && !deliver(shared, env, messages) {
        return;
    }
    report_pending(shared, env);
}

/// Once no batch is in flight: the end of stream or error found behind the last one.
fn report_pending(shared: &SharedRef, env: sys::napi_env) {
    let pending = match shared.try_borrow_mut() {
        Ok(mut s) if !s.batch_open && s.phase == Phase::Open => s.pending.take(),
        _ => None,
    };
    match pending {
        Some(Pending::End) => {
            if let Ok(mut s) = shared.try_borrow_mut() {
                s.read_ended = true;
                let _ = s.update_poll();
            }
            emit(shared, env, |h| &h.end, &[]);
        }
        Some(Pending::Failed(e)) => fail(shared, env, e),
        None => {}
    }
}

/// JS finished the batch in flight (after `pause()`, a throw, or a wait for a
/// listener): its descriptors are JS's, reading resumes, and what was found behind it
/// is returned for JS to report (`Ok(true)`: end of stream; an error closes the channel
/// and is returned as the error).
pub(crate) fn settle(shared: &SharedRef) -> Result<bool, Error> {
    let Ok(mut s) = shared.try_borrow_mut() else {
        return Err(shared::busy());
    };
    let inflight = s.inflight.take();
    s.batch_open = false;
    let pending = if s.phase == Phase::Open {
        s.pending.take()
    } else {
        None
    };
    let result = match pending {
        None => Ok(false),
        Some(Pending::End) => {
            s.read_ended = true;
            Ok(true)
        }
        Some(Pending::Failed(e)) => Err(e),
    };
    let updated = s.update_poll();
    drop(s);
    drop(inflight);
    match (result, updated) {
        (Err(e), _) | (Ok(_), Err(e)) => {
            shared::close(shared, false);
            Err(e)
        }
        (Ok(end), Ok(())) => Ok(end),
    }
}

/// Hands a batch to JS: its buffers (one, or an array), a Uint32 table — unless the
/// batch is one message without descriptors that fills its buffer — and the number of
/// messages. The table (see [`batch`]) is the cursor, then per message its length and
/// descriptor count, then every descriptor in order. Returns false once the channel is
/// closed.
fn deliver(shared: &SharedRef, env: sys::napi_env, batch: Batch) -> bool {
    let count = batch.len();
    let any_fds = batch.any_fds();
    let Some(data) = batch.buffers_value() else {
        fail(shared, env, Error::os("napi_create_array", Errno::ENOMEM));
        return false;
    };
    let mut args = [data, ptr::null_mut(), ptr::null_mut()];
    let mut cursor = None;
    if !batch.is_single_exact() || any_fds {
        let words = batch.table_words();
        let Some((table, table_ptr)) = js::buffer(env, words.len() * 4) else {
            fail(shared, env, Error::os("napi_create_buffer", Errno::ENOMEM));
            return false; // the batch's descriptors close as it drops: nothing leaks
        };
        // SAFETY: the table buffer has words.len() * 4 bytes, freshly allocated.
        unsafe {
            ptr::copy_nonoverlapping(words.as_ptr().cast::<u8>(), table_ptr, words.len() * 4)
        };
        if any_fds {
            // Only a batch with descriptors needs to know how far JS got.
            let Some(reference) = Reference::new(env, table) else {
                fail(
                    shared,
                    env,
                    Error::os("napi_create_reference", Errno::ENOMEM),
                );
                return false;
            };
            cursor = Some((reference, table_ptr as *const u8));
        }
        args[1] = table;
    } else if let Some(null) = js::null_value(env) {
        args[1] = null;
    }
    let Some(n) = js::u32_value(env, count as u32) else {
        return false;
    };
    args[2] = n;
    // The batch is open from before the call: JS may finish it, and call settle(), from
    // the call's own tick queue, and a close() inside the call must find its descriptors.
    match shared.try_borrow_mut() {
        Ok(mut s) => {
            s.batch_open = true;
            if any_fds {
                s.inflight = Some(Box::new(Inflight {
                    fds: batch.fds,
                    per_message: batch.per_message,
                    cursor,
                }));
            }
        }
        Err(_) => return false,
    }
    let finished = emit(shared, env, |h| &h.messages, &args).is_some_and(|r| js::is_true(env, r));
    let Ok(mut s) = shared.try_borrow_mut() else {
        return false;
    };
    if s.phase != Phase::Open {
        return false; // close() released the batch
    }
    let done = if finished {
        s.batch_open = false;
        s.inflight.take()
    } else {
        None
    };
    let updated = s.update_poll(); // an unfinished batch stops reading now
    drop(s);
    drop(done); // every message taken: the descriptors are JS's
    if let Err(e) = updated {
        fail(shared, env, e);
        return false;
    }
    true
}

/// Reports `e` as the channel's error, then closes it.
pub(crate) fn fail(shared: &SharedRef, env: sys::napi_env, e: Error) {
    if let Ok(mut s) = shared.try_borrow_mut() {
        s.stop_polling();
    }
    if let Some(err) = js::error_value(env, &e) {
        emit(shared, env, |h| &h.error, &[err]);
    }
    shared::close(shared, false);
}

fn is_closed(shared: &SharedRef) -> bool {
    shared.try_borrow().map_or(true, |s| s.phase != Phase::Open)
}

/// Calls one of the JS handlers with `args`, inside a callback scope in the channel's
/// async context. Returns the handler's result; None when the channel is closed or the
/// handler threw (the exception is reported as Node reports any exception thrown from a
/// callback of the loop: 'uncaughtException').
fn emit(
    shared: &SharedRef,
    env: sys::napi_env,
    pick: impl Fn(&shared::Handlers) -> &Reference,
    args: &[sys::napi_value],
) -> Option<sys::napi_value> {
    let (func, recv, ctx) = {
        let mut s = shared.try_borrow_mut().ok()?;
        if s.phase != Phase::Open {
            return None;
        }
        let h = s.handlers.as_ref()?;
        let call = (pick(h).value()?, h.owner.value()?, h.context.raw());
        s.emitting += 1;
        call
    };
    let mut result: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; func, recv and args are live values of this
    // scope; ctx stays alive for the call (a close() inside it retires the handlers,
    // which own the context, until the call has returned).
    let status = unsafe {
        sys::napi_make_callback(env, ctx, recv, func, args.len(), args.as_ptr(), &mut result)
    };
    let retired = match shared.try_borrow_mut() {
        Ok(mut s) => {
            s.emitting -= 1;
            if s.emitting == 0 {
                s.retired.take()
            } else {
                None
            }
        }
        Err(_) => None,
    };
    drop(retired);
    if status == sys::Status::napi_pending_exception {
        let mut exception: sys::napi_value = ptr::null_mut();
        // SAFETY: an exception is pending in this environment.
        unsafe {
            if sys::napi_get_and_clear_last_exception(env, &mut exception) == sys::Status::napi_ok {
                sys::napi_fatal_exception(env, exception);
            }
        }
        return None;
    }
    (status == sys::Status::napi_ok && !result.is_null()).then_some(result)
}
