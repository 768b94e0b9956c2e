//! Replays the fuzzing corpus (crates/core/fuzz/corpus: the hostile streams written by
//! hand, plus any input the fuzzer ever flagged) through the same checks as
//! `npm run fuzz`, and pins what each hand-written one must do.

use std::path::PathBuf;

use socketpair_core::fuzzing;
use socketpair_core::testutil::open_fd_count;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_keeps_the_invariants_and_does_what_it_should() {
    // (name, messages delivered, descriptors delivered, ends in ERR_PROTOCOL)
    let expected: &[(&str, usize, usize, bool)] = &[
        ("bad-version", 0, 0, true),
        ("reserved-flags", 0, 0, true),
        ("length-past-limit", 0, 0, true),
        ("length-2^32-1", 0, 0, true),
        ("length-2^32-1-no-eof", 0, 0, true),
        ("header-split-then-eof", 0, 0, true),
        ("fewer-fds-than-declared", 0, 0, true),
        ("more-fds-than-declared", 2, 1, true),
        ("more-fds-caught-at-eof", 1, 1, true),
        ("fds-with-zero-length-payload", 2, 2, false),
        ("fd-flood-no-frames", 0, 0, true),
        ("cap-plus-one-declared", 0, 0, true),
        ("cap-declared-and-sent", 1, 253, false),
        ("fds-split-across-sends", 0, 0, true),
        ("eof-mid-payload", 0, 0, true),
        ("direct-payload-with-late-fds", 0, 0, true),
        ("fds-mid-payload", 1, 0, true),
        ("extra-fd-taken-by-next-send", 1, 1, true),
        ("extra-fd-taken-by-split-header", 1, 1, true),
        ("glued-sends", 3, 3, false),
        ("next-frame-of-a-send-in-a-later-receive", 3, 3, false),
        ("limit-zero-nonempty", 0, 0, true),
        ("many-empty-frames", 500, 0, false),
        ("prealloc-boundary", 0, 0, true),
    ];
    let base = open_fd_count();
    let mut fds = fuzzing::fd_source();
    let files = corpus();
    assert!(files.len() >= expected.len());
    for (name, script) in &files {
        let outcome = fuzzing::run(script, &mut fds).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some((_, messages, delivered, error)) = expected.iter().find(|(n, ..)| n == name) {
            assert_eq!(outcome.messages.len(), *messages, "{name}");
            assert_eq!(outcome.fds_delivered, *delivered, "{name}");
            assert_eq!(
                outcome.error.as_deref(),
                error.then_some("ERR_PROTOCOL"),
                "{name}"
            );
        }
    }
    for (name, ..) in expected {
        assert!(
            files.iter().any(|(n, _)| n == name),
            "{name} is missing from the corpus"
        );
    }
    drop(fds);
    assert_eq!(open_fd_count(), base);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Whatever a well-behaved peer frames — any payloads, any descriptor counts, sent in
    /// any grouping and received in any pieces, some through the direct payload path —
    /// decodes to exactly what was framed, with every descriptor delivered. (On a
    /// failure, proptest shrinks to the smallest such stream.)
    #[test]
    fn well_formed_streams_decode_to_what_was_framed(
        messages in proptest::collection::vec(
            (proptest::collection::vec(proptest::num::u8::ANY, 0..3000), 0usize..4),
            1..24,
        ),
        sends in proptest::collection::vec(1usize..5, 1..4),
        cuts in proptest::collection::vec(1usize..5000, 1..6),
    ) {
        let mut fds = fuzzing::fd_source();
        let script = fuzzing::well_formed_script(4, &messages, &sends, &cuts, true);
        let outcome = fuzzing::run(&script, &mut fds).map_err(proptest::test_runner::TestCaseError::fail)?;
        proptest::prop_assert_eq!(outcome.error, None);
        proptest::prop_assert_eq!(&outcome.messages, &messages);
        proptest::prop_assert_eq!(outcome.fds_delivered, outcome.fds_in);
    }
}
