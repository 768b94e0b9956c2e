//! The frame decoder under libFuzzer: each input is a script (the format is in
//! `socketpair_core::fuzzing`: a limit, then receives with their bytes and a number of
//! real descriptors, then perhaps the end of stream), run with real descriptors through
//! `fuzzing::run`, which checks every invariant — each descriptor handed in is delivered
//! (in order, once) or closed, no payload exceeds the limit, the decoder holds nothing
//! after an error — and returns an error on any violation, which is a finding here.
//! The seed corpus is `crates/core/fuzz/corpus`, which `cargo test` replays.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use socketpair_core::fuzzing::{self, FdSource};

thread_local! {
    static FDS: RefCell<Option<FdSource>> = const { RefCell::new(None) };
}

fuzz_target!(|script: &[u8]| {
    FDS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let fds = cell.get_or_insert_with(fuzzing::fd_source);
        if let Err(violation) = fuzzing::run(script, fds) {
            panic!("invariant violated: {violation}");
        }
    });
});
