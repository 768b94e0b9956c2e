//! Received messages land in memory that JS owns, copied once at most.
//!
//! The core decodes from one read buffer per thread (all channels of a loop are read on
//! its thread) and hands each message to a [`Batch`]:
//!
//! - a payload that arrived whole in one receive is copied, once, into a Node buffer:
//!   small ones (under [`OWN_BUFFER_BYTES`]) are packed into slabs of at most
//!   [`SLAB_BYTES`], so that a kept small message pins a slab and not a whole batch
//!   (Node's own `Buffer` pool is 8 KiB too); larger ones get a buffer of their own;
//! - a payload that spans receives gets a Node buffer of its exact size when its header
//!   arrives ([`JsPayload`]); the rest of it is received straight into that buffer.
//!
//! Every buffer is Node's memory (`napi_create_buffer`, never an external buffer, as
//! Electron's memory cage requires).
//!
//! JS gets the buffers in order and a table: per message its length and descriptor
//! count, with [`STARTS_BUFFER`] set on the first message of each buffer; messages of a
//! buffer lie back to back from its start.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;

use napi::sys;
use nix::errno::Errno;
use socketpair_core::channel::{ChannelCore, READ_BUFFER_BYTES};
use socketpair_core::frame::Sink;
use socketpair_core::Error;

use crate::js::{self, Reference};

/// A channel's core, assembling payloads that span receives in Node buffers.
pub(crate) type Core = ChannelCore<JsPayload>;

/// Small payloads are packed into Node buffers of at most this size.
pub(crate) const SLAB_BYTES: usize = 8 << 10;

/// Payloads at least this large get a Node buffer of their own.
pub(crate) const OWN_BUFFER_BYTES: usize = 4 << 10;

/// Set in a message's descriptor-count word when it is the first of the next buffer.
pub(crate) const STARTS_BUFFER: u32 = 1 << 31;

thread_local! {
    /// The read buffer of this thread's channels (virtual memory until touched: a
    /// stream channel uses its first 256 KiB, only records use more).
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's read buffer (a fresh one if it is in use, which the
/// event loop never does: reads do not nest).
pub(crate) fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < READ_BUFFER_BYTES {
                // Zeroed by the allocator (calloc): pages are committed as reads reach them.
                *buf = vec![0; READ_BUFFER_BYTES];
            }
            f(&mut buf)
        }
        Err(_) => f(&mut vec![0; READ_BUFFER_BYTES]),
    })
}

/// A payload being assembled across receives: a Node buffer of exactly its length,
/// reachable only from here (kept alive by the reference) until it is delivered.
pub(crate) struct JsPayload {
    reference: Reference,
    ptr: *mut u8,
    len: usize,
}

impl std::fmt::Debug for JsPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsPayload({} bytes)", self.len)
    }
}

impl AsMut<[u8]> for JsPayload {
    fn as_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: ptr points at the `len` bytes of a Node buffer that the reference keeps
        // alive and Node never moves; no JS code has the buffer yet (it is handed over
        // only once assembled), so nothing else reads or writes it meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// The messages of one read, as JS will get them.
pub(crate) struct Batch {
    env: sys::napi_env,
    /// Every buffer, in order.
    buffers: Vec<sys::napi_value>,
    /// Where the last buffer, when it is a slab with room, has its bytes: pointer,
    /// capacity, bytes used.
    slab: Option<(*mut u8, usize, usize)>,
    /// The table after its cursor word: per message its length, then its descriptor
    /// count with [`STARTS_BUFFER`].
    words: Vec<u32>,
    /// Every descriptor, in message order.
    pub(crate) fds: Vec<OwnedFd>,
    /// Descriptors per message.
    pub(crate) per_message: Vec<u32>,
    /// Bytes of the buffers beyond the messages in them (a slab's room left).
    slack: usize,
}

impl Batch {
    pub(crate) fn new(env: sys::napi_env) -> Self {
        Batch {
            env,
            buffers: Vec::new(),
            slab: None,
            words: Vec::new(),
            fds: Vec::new(),
            per_message: Vec::new(),
            slack: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.per_message.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.per_message.is_empty()
    }

    pub(crate) fn any_fds(&self) -> bool {
        !self.fds.is_empty()
    }

    /// One message in a buffer of exactly its size: JS needs no table for it.
    pub(crate) fn is_single_exact(&self) -> bool {
        self.len() == 1 && self.buffers.len() == 1 && self.slack_of_last() == 0
    }

    fn slack_of_last(&self) -> usize {
        self.slab.map_or(0, |(_, cap, used)| cap - used) + self.slack
    }

    /// The buffers as JS gets them: the buffer itself when there is one, else an array.
    pub(crate) fn buffers_value(&self) -> Option<sys::napi_value> {
        if let [only] = self.buffers[..] {
            return Some(only);
        }
        let mut list: sys::napi_value = ptr::null_mut();
        // SAFETY: env is live on this thread; list is an out-pointer.
        if unsafe { sys::napi_create_array_with_length(self.env, self.buffers.len(), &mut list) }
            != sys::Status::napi_ok
        {
            return None;
        }
        for (i, b) in self.buffers.iter().enumerate() {
            // SAFETY: list and b are live values of this scope.
            if unsafe { sys::napi_set_element(self.env, list, i as u32, *b) }
                != sys::Status::napi_ok
            {
                return None;
            }
        }
        Some(list)
    }

    /// The table: a cursor word (0), the per-message words, then every descriptor.
    pub(crate) fn table_words(&self) -> Vec<u32> {
        let mut words = Vec::with_capacity(1 + self.words.len() + self.fds.len());
        words.push(0);
        words.extend_from_slice(&self.words);
        words.extend(self.fds.iter().map(|fd| fd.as_raw_fd() as u32));
        words
    }

    /// A Node buffer of `len` bytes, appended to the list.
    fn new_buffer(&mut self, len: usize) -> Result<*mut u8, Error> {
        let Some((value, data)) = js::buffer(self.env, len) else {
            return Err(Error::os("napi_create_buffer", Errno::ENOMEM));
        };
        if let Some((_, cap, used)) = self.slab.take() {
            self.slack += cap - used;
        }
        self.buffers.push(value);
        Ok(data)
    }

    fn record(&mut self, len: usize, fds: Vec<OwnedFd>, starts: bool) {
        let n = fds.len() as u32;
        self.words.push(len as u32);
        self.words.push(n | if starts { STARTS_BUFFER } else { 0 });
        self.per_message.push(n);
        self.fds.extend(fds);
    }
}

impl Sink for Batch {
    type Buf = JsPayload;

    fn alloc(&mut self, len: usize) -> Result<JsPayload, Error> {
        let Some((value, ptr)) = js::buffer(self.env, len) else {
            return Err(Error::os("napi_create_buffer", Errno::ENOMEM));
        };
        let Some(reference) = Reference::new(self.env, value) else {
            return Err(Error::os("napi_create_reference", Errno::ENOMEM));
        };
        Ok(JsPayload {
            reference,
            ptr,
            len,
        })
    }

    fn complete(&mut self, data: &[u8], fds: Vec<OwnedFd>, following: usize) -> Result<(), Error> {
        let len = data.len();
        let (at, starts) = match self.slab {
            Some((base, cap, used)) if len < OWN_BUFFER_BYTES && used + len <= cap => {
                self.slab = Some((base, cap, used + len));
                // SAFETY: the slab has `cap` bytes and `used + len <= cap`.
                (unsafe { base.add(used) }, false)
            }
            _ if len < OWN_BUFFER_BYTES => {
                // A new slab, no larger than what this receive can still fill.
                let cap = SLAB_BYTES.min(len + following).max(len);
                let base = self.new_buffer(cap)?;
                self.slab = Some((base, cap, len));
                (base, true)
            }
            _ => {
                let base = self.new_buffer(len)?;
                (base, true)
            }
        };
        if len > 0 {
            // SAFETY: `at` has room for `len` bytes (above); the input is Rust memory and
            // the buffer Node's, so they do not overlap.
            unsafe { ptr::copy_nonoverlapping(data.as_ptr(), at, len) };
        }
        self.record(len, fds, starts);
        Ok(())
    }

    fn assembled(&mut self, data: JsPayload, fds: Vec<OwnedFd>) -> Result<(), Error> {
        let Some(value) = data.reference.value() else {
            return Err(Error::os("napi_get_reference_value", Errno::ENOMEM));
        };
        if let Some((_, cap, used)) = self.slab.take() {
            self.slack += cap - used;
        }
        self.buffers.push(value);
        self.record(data.len, fds, true);
        Ok(())
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn truncate(&mut self, count: usize) {
        if count >= self.len() {
            return;
        }
        let keep_fds: usize = self.per_message[..count].iter().map(|&n| n as usize).sum();
        self.fds.truncate(keep_fds); // closes the rest
        self.per_message.truncate(count);
        self.words.truncate(2 * count);
        // Buffers after the last kept message stay unused: JS walks the table.
    }
}
