//! Small owners of raw Node-API resources — a handle scope, a reference, an async
//! context — each released exactly once by its `Drop`, and the conversions the glue
//! needs (numbers, strings, booleans, and errors shaped like Node's own).
//!
//! Everything here runs on the environment's own thread; none of it calls into JS.

use std::ffi::c_void;
use std::ptr;

use napi::sys;
use socketpair_core::Error;

/// A handle scope for values created outside any JS frame (a libuv callback).
pub(crate) struct HandleScope {
    env: sys::napi_env,
    scope: sys::napi_handle_scope,
}

impl HandleScope {
    pub(crate) fn open(env: sys::napi_env) -> Option<Self> {
        let mut scope: sys::napi_handle_scope = ptr::null_mut();
        // SAFETY: env is live on this thread; scope is an out-pointer.
        let ok = unsafe { sys::napi_open_handle_scope(env, &mut scope) } == sys::Status::napi_ok;
        ok.then_some(HandleScope { env, scope })
    }
}

impl Drop for HandleScope {
    fn drop(&mut self) {
        // SAFETY: the scope opened in `open`, closed once, innermost first (scopes are
        // only ever held for the length of one callback).
        unsafe { sys::napi_close_handle_scope(self.env, self.scope) };
    }
}

/// A strong reference to a JS value, deleted when dropped.
pub(crate) struct Reference {
    env: sys::napi_env,
    raw: sys::napi_ref,
}

impl Reference {
    pub(crate) fn new(env: sys::napi_env, value: sys::napi_value) -> Option<Self> {
        let mut raw: sys::napi_ref = ptr::null_mut();
        // SAFETY: env and value are live for this call; raw is an out-pointer.
        let ok =
            unsafe { sys::napi_create_reference(env, value, 1, &mut raw) } == sys::Status::napi_ok;
        ok.then_some(Reference { env, raw })
    }

    pub(crate) fn value(&self) -> Option<sys::napi_value> {
        let mut out: sys::napi_value = ptr::null_mut();
        // SAFETY: a live reference in its own environment; out is an out-pointer.
        let ok = unsafe { sys::napi_get_reference_value(self.env, self.raw, &mut out) }
            == sys::Status::napi_ok;
        (ok && !out.is_null()).then_some(out)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        // SAFETY: created by napi_create_reference in env, deleted once.
        unsafe { sys::napi_delete_reference(self.env, self.raw) };
    }
}

/// The async context callbacks run in (so `AsyncLocalStorage` and async hooks see the
/// context the channel was created in). Its resource is the channel's JS object, which
/// lives as long as the channel can call back.
pub(crate) struct AsyncContext {
    env: sys::napi_env,
    raw: sys::napi_async_context,
}

impl AsyncContext {
    pub(crate) fn new(env: sys::napi_env, resource: sys::napi_value, name: &str) -> Option<Self> {
        let name = string_value(env, name)?;
        let mut raw: sys::napi_async_context = ptr::null_mut();
        // SAFETY: env, resource and name are live; raw is an out-pointer.
        let ok =
            unsafe { sys::napi_async_init(env, resource, name, &mut raw) } == sys::Status::napi_ok;
        ok.then_some(AsyncContext { env, raw })
    }

    pub(crate) fn raw(&self) -> sys::napi_async_context {
        self.raw
    }
}

impl Drop for AsyncContext {
    fn drop(&mut self) {
        // SAFETY: created by napi_async_init in env, destroyed once.
        unsafe { sys::napi_async_destroy(self.env, self.raw) };
    }
}

pub(crate) fn u32_value(env: sys::napi_env, v: u32) -> Option<sys::napi_value> {
    let mut out: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; out is an out-pointer.
    (unsafe { sys::napi_create_uint32(env, v, &mut out) } == sys::Status::napi_ok).then_some(out)
}

pub(crate) fn f64_value(env: sys::napi_env, v: f64) -> Option<sys::napi_value> {
    let mut out: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; out is an out-pointer.
    (unsafe { sys::napi_create_double(env, v, &mut out) } == sys::Status::napi_ok).then_some(out)
}

pub(crate) fn string_value(env: sys::napi_env, s: &str) -> Option<sys::napi_value> {
    let mut out: sys::napi_value = ptr::null_mut();
    // SAFETY: s is valid UTF-8 of the given length; out is an out-pointer.
    (unsafe { sys::napi_create_string_utf8(env, s.as_ptr().cast(), s.len() as isize, &mut out) }
        == sys::Status::napi_ok)
        .then_some(out)
}

pub(crate) fn null_value(env: sys::napi_env) -> Option<sys::napi_value> {
    let mut out: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; out is an out-pointer.
    (unsafe { sys::napi_get_null(env, &mut out) } == sys::Status::napi_ok).then_some(out)
}

/// `value === true` (anything else, including a failed call, is false).
pub(crate) fn is_true(env: sys::napi_env, value: sys::napi_value) -> bool {
    let mut out = false;
    // SAFETY: env and value are live; out is an out-pointer. A non-boolean is an error
    // status, which leaves `out` false.
    let status = unsafe { sys::napi_get_value_bool(env, value, &mut out) };
    status == sys::Status::napi_ok && out
}

/// A Node-API buffer of `len` bytes (Node's memory, never an external buffer) and a
/// pointer to its bytes (dangling, never dereferenced, when `len` is 0).
pub(crate) fn buffer(env: sys::napi_env, len: usize) -> Option<(sys::napi_value, *mut u8)> {
    let mut data: *mut c_void = ptr::null_mut();
    let mut value: sys::napi_value = ptr::null_mut();
    // SAFETY: env is live on this thread; out-pointers are valid.
    let ok =
        unsafe { sys::napi_create_buffer(env, len, &mut data, &mut value) } == sys::Status::napi_ok;
    if !ok || value.is_null() {
        return None;
    }
    if len == 0 {
        return Some((value, ptr::NonNull::<u8>::dangling().as_ptr()));
    }
    (!data.is_null()).then_some((value, data.cast()))
}

fn set_property(env: sys::napi_env, object: sys::napi_value, name: &str, value: sys::napi_value) {
    let Some(key) = string_value(env, name) else {
        return;
    };
    // SAFETY: env, object, key and value are live on this thread.
    unsafe { sys::napi_set_property(env, object, key, value) };
}

/// An `Error` shaped like Node's system errors: `code` always; for an operating-system
/// error also `errno` (negative, as libuv and Node report it) and `syscall`.
pub(crate) fn error_value(env: sys::napi_env, e: &Error) -> Option<sys::napi_value> {
    let message = e.to_string().replace('\0', "");
    let code = string_value(env, &e.code())?;
    let msg = string_value(env, &message)?;
    let mut err: sys::napi_value = ptr::null_mut();
    // SAFETY: env, code and msg are live; err is an out-pointer.
    if unsafe { sys::napi_create_error(env, code, msg, &mut err) } != sys::Status::napi_ok {
        return None;
    }
    if let Some(errno) = e.errno() {
        let mut n: sys::napi_value = ptr::null_mut();
        // SAFETY: as above.
        if unsafe { sys::napi_create_int32(env, -(errno as i32), &mut n) } == sys::Status::napi_ok {
            set_property(env, err, "errno", n);
        }
    }
    if let Some(syscall) = e.syscall().and_then(|s| string_value(env, s)) {
        set_property(env, err, "syscall", syscall);
    }
    Some(err)
}

/// Throws `e` (as [`error_value`] shapes it) and tells napi-rs the exception is pending.
pub(crate) fn throw(env: sys::napi_env, e: Error) -> napi::Error {
    if let Some(err) = error_value(env, &e) {
        // SAFETY: env is live on this thread and no exception is pending yet.
        unsafe { sys::napi_throw(env, err) };
    }
    napi::Error::from_status(napi::Status::PendingException)
}
