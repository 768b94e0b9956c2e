//! Node-API glue for the `socketpair` package: converts values and forwards to
//! `socketpair-core`. The public API is shaped in index.ts; these functions take the
//! already-validated, already-defaulted arguments it passes.
//!
//! Every error reaching JS carries a stable `code` (the errno name or one of ours), and
//! nothing here can panic: `unwrap`/`expect`/`panic!` are denied for the whole crate.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(unix)]
mod channel;
#[cfg(unix)]
mod js;
#[cfg(unix)]
mod registry;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
mod uv;

#[cfg(unix)]
pub use channel::*;
#[cfg(unix)]
pub use unix::*;
