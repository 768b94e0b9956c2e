//! The core of the `socketpair` npm package, in plain Rust with no Node in sight:
//! socketpair(2), sendmsg/recvmsg with descriptor passing (SCM_RIGHTS), peer
//! credentials, and the frame codec of PROTOCOL.md.
//!
//! ```
//! use std::os::fd::AsFd;
//! use socketpair_core::{blocking, frame::FrameDecoder, socket};
//!
//! let (a, b) = socket::socketpair(socket::SocketKind::Stream, Default::default()).unwrap();
//! blocking::write_frame(a.as_fd(), b"ping", &[b.as_fd()]).unwrap();
//! let mut decoder = FrameDecoder::new(1 << 20);
//! let messages = blocking::read_messages(b.as_fd(), &mut decoder, 4096).unwrap().unwrap();
//! assert_eq!(messages[0].data, b"ping");
//! assert_eq!(messages[0].fds.len(), 1); // a new descriptor for `b` itself
//! ```
#![cfg(unix)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod blocking;
pub mod channel;
pub mod error;
pub mod frame;
#[cfg(any(test, feature = "test-util"))]
pub mod fuzzing;
pub mod msg;
pub mod peercred;
pub mod socket;
#[cfg(any(test, feature = "test-util"))]
pub mod testutil;
pub mod write_queue;

pub use error::{Error, Result};
