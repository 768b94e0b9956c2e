//! The decoder against arbitrary input: arbitrary bytes, arbitrary splits, arbitrary
//! descriptor arrivals. It never panics, never holds more than it was given, and every
//! descriptor handed in is either delivered with a message or closed.

use std::os::fd::OwnedFd;

use proptest::prelude::*;
use socketpair_core::frame::{FrameDecoder, FrameHeader};
use socketpair_core::testutil::{open_fd_count, temp_file_with};

/// Bytes that are often valid headers, so the fuzzing reaches past the first check.
fn wire() -> impl Strategy<Value = Vec<u8>> {
    let frame = (0u32..64, 0u16..4, any::<bool>()).prop_map(|(len, nfds, corrupt)| {
        let mut v = FrameHeader::new(len, nfds).encode().to_vec();
        if corrupt {
            v[6] ^= 0xff;
        }
        v.extend(std::iter::repeat_n(0xab, len as usize));
        v
    });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(frame, 0..12).prop_map(|f| f.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics_or_leaks(
        bytes in wire(),
        cuts in prop::collection::vec((1usize..40, 0usize..4), 1..20),
        max in prop_oneof![Just(16usize), Just(1 << 20)],
    ) {
        let base = open_fd_count();
        let mut delivered = 0usize;
        let mut handed_in = 0usize;
        {
            let mut decoder = FrameDecoder::new(max);
            let mut out = Vec::new();
            let mut rest = &bytes[..];
            let mut i = 0;
            let mut failed = false;
            while !rest.is_empty() && !failed {
                let (len, nfds) = cuts[i % cuts.len()];
                i += 1;
                let take = len.min(rest.len());
                let fds: Vec<OwnedFd> = (0..nfds).map(|_| temp_file_with(b"")).collect();
                handed_in += fds.len();
                failed = decoder.push(&rest[..take], fds, &mut out).is_err();
                rest = &rest[take..];
            }
            let _ = decoder.finish();
            prop_assert_eq!(decoder.queued_fds(), 0);
            for m in &out {
                prop_assert!(m.data.len() <= max);
                delivered += m.fds.len();
            }
            prop_assert!(delivered <= handed_in);
            // Only what was delivered is still open.
            prop_assert_eq!(open_fd_count(), base + delivered);
        }
        prop_assert_eq!(open_fd_count(), base);
    }
}
