//! Fuzzes the frame decoder: `cargo run --release --example fuzz_decoder -- [options]`
//! (`npm run fuzz` runs one per CPU with different seeds).
//!
//!   --inputs N      how many generated inputs (default 1,000,000)
//!   --seed S        the generator's seed (default 1)
//!   --corpus DIR    replays every file in DIR first; a failing input is written there
//!                   as crash-<seed>-<n>.bin (default crates/core/fuzz/corpus)
//!
//! Inputs are scripts (see `socketpair_core::fuzzing`): well-formed streams checked
//! message by message against what was framed, the same streams mutated (bit flips,
//! header fields set to boundary values, bytes inserted, cut or repeated, descriptor
//! counts changed), and random bytes. Every input runs with real descriptors and is
//! checked for: no panic; every descriptor delivered with its message or closed, in
//! order, none twice; no payload over the limit; and memory: the bytes allocated while it
//! runs stay under the limit's reservation (at most 8 MiB) plus a small multiple of the
//! input's size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use socketpair_core::frame::FrameHeader;
use socketpair_core::fuzzing::{self, FdSource, LIMITS};

/// Counts live heap bytes and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    /// Mostly small, sometimes large.
    fn size(&mut self) -> usize {
        match self.below(100) {
            0..=59 => self.below(16),
            60..=89 => self.below(300),
            90..=97 => self.below(5000),
            _ => self.below(70_000),
        }
    }
}

/// A well-formed stream: the messages it carries, and its script.
fn well_formed(rng: &mut Rng) -> (Vec<(Vec<u8>, usize)>, Vec<u8>) {
    let sel = rng.below(LIMITS.len()) as u8;
    let max = LIMITS[sel as usize];
    let count = rng.below(12);
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let len = rng.size().min(max);
        let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ (rng.next() as u8)).collect();
        let nfds = if rng.chance(30) { 1 + rng.below(3) } else { 0 };
        messages.push((data, nfds));
    }
    // One send per message, or several per send; keep each send's descriptors under 64.
    let sends: Vec<usize> = (0..4).map(|_| 1 + rng.below(3)).collect();
    let cuts: Vec<usize> = (0..5)
        .map(|_| match rng.below(4) {
            0 => 1 + rng.below(8),
            1 => 1 + rng.below(64),
            2 => 8,
            _ => 1 + rng.below(70_000),
        })
        .collect();
    let script = fuzzing::well_formed_script(sel, &messages, &sends, &cuts, rng.chance(90));
    (messages, script)
}

/// Headers with boundary values, written over a header-sized window.
fn hostile_header(rng: &mut Rng, max: usize) -> [u8; 8] {
    let len: u32 = match rng.below(8) {
        0 => 0,
        1 => max.min(u32::MAX as usize) as u32,
        2 => (max as u64 + 1).min(u32::MAX as u64) as u32,
        3 => u32::MAX,
        4 => (8 << 20) + 1,
        5 => 1 << 31,
        _ => rng.below(100) as u32,
    };
    let nfds: u16 = match rng.below(7) {
        0 => 0,
        1 => 253,
        2 => 254,
        3 => u16::MAX,
        _ => rng.below(4) as u16,
    };
    let mut h = FrameHeader::new(len, nfds).encode();
    match rng.below(10) {
        0 => h[6] = rng.next() as u8,         // version
        1 => h[7] = 1 + rng.below(255) as u8, // reserved flags
        _ => {}
    }
    h
}

/// Mutates a script in place: the wire bytes, the receive sizes and descriptor counts.
fn mutate(rng: &mut Rng, script: &mut Vec<u8>) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if script.len() < 2 {
            script.extend((0..rng.below(64)).map(|_| rng.next() as u8));
            continue;
        }
        let at = 1 + rng.below(script.len() - 1);
        match rng.below(7) {
            0 => script[at] ^= 1 << rng.below(8),
            1 => script[at] = rng.next() as u8,
            2 => {
                let max = LIMITS[script[0] as usize % LIMITS.len()];
                let h = hostile_header(rng, max);
                for (i, b) in h.iter().enumerate() {
                    if at + i < script.len() {
                        script[at + i] = *b;
                    }
                }
            }
            3 => script.truncate(at),
            4 => {
                let n = rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                script.splice(at..at, bytes);
            }
            5 => {
                let end = (at + rng.below(64)).min(script.len());
                let copy = script[at..end].to_vec();
                script.splice(end..end, copy);
            }
            _ => {
                // A receive with a header and descriptors out of nowhere.
                let max = LIMITS[script[0] as usize % LIMITS.len()];
                let h = hostile_header(rng, max);
                let mut op = vec![
                    rng.below(2) as u8,
                    8,
                    0,
                    match rng.below(4) {
                        0 => 254,
                        1 => 255,
                        _ => rng.below(6) as u8,
                    },
                ];
                op.extend_from_slice(&h);
                script.splice(at..at, op);
            }
        }
    }
}

fn random_script(rng: &mut Rng) -> Vec<u8> {
    let n = rng.size().min(4096);
    (0..n).map(|_| rng.next() as u8).collect()
}

/// Runs one input under the checks; returns an error message on a finding.
fn check(
    script: &[u8],
    expected: Option<&[(Vec<u8>, usize)]>,
    fds: &mut FdSource,
) -> Result<(), String> {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fuzzing::run(script, fds)));
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    let outcome = match result {
        Err(_) => return Err("panic".into()),
        Ok(Err(violation)) => return Err(violation),
        Ok(Ok(outcome)) => outcome,
    };
    let max = script
        .first()
        .map(|b| LIMITS[*b as usize % LIMITS.len()])
        .unwrap_or(0);
    // A header within the limit gets its payload's whole buffer (pages are committed
    // as bytes arrive).
    let allowed = max + 4 * script.len() + (64 << 10);
    if peak > allowed {
        return Err(format!(
            "allocated {peak} bytes for a {}-byte input (limit {max}; allowed {allowed})",
            script.len()
        ));
    }
    if let Some(expected) = expected {
        if outcome.error.is_some() || outcome.messages.as_slice() != expected {
            return Err(format!(
                "a well-formed stream decoded wrong: error {:?}, {} of {} messages",
                outcome.error,
                outcome.messages.len(),
                expected.len()
            ));
        }
    }
    Ok(())
}

fn save(corpus: &Path, name: &str, script: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(corpus);
    let path = corpus.join(name);
    let _ = std::fs::write(&path, script);
    path
}

fn main() {
    let mut inputs: u64 = 1_000_000;
    let mut seed: u64 = 1;
    let mut corpus = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--inputs" => inputs = v.replace('_', "").parse().unwrap_or(inputs),
            "--seed" => seed = v.parse().unwrap_or(seed),
            "--corpus" => corpus = PathBuf::from(v),
            _ => {
                eprintln!("unknown option {a}");
                std::process::exit(2);
            }
        }
    }
    // Silence the default panic message: a panic is reported as a finding below.
    std::panic::set_hook(Box::new(|_| {}));
    let mut fds = fuzzing::fd_source();
    let started = Instant::now();
    let mut findings = 0u64;

    // The kept corpus first.
    let mut replayed = 0;
    if let Ok(entries) = std::fs::read_dir(&corpus) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let Ok(script) = std::fs::read(&path) else {
                continue;
            };
            replayed += 1;
            if let Err(e) = check(&script, None, &mut fds) {
                findings += 1;
                eprintln!("FINDING (corpus {}): {e}", path.display());
            }
        }
    }

    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut kinds = [0u64; 3];
    for n in 0..inputs {
        let (script, expected) = match rng.below(10) {
            0..=2 => {
                kinds[0] += 1;
                let (m, s) = well_formed(&mut rng);
                (s, Some(m))
            }
            3..=8 => {
                kinds[1] += 1;
                let (_, mut s) = well_formed(&mut rng);
                mutate(&mut rng, &mut s);
                (s, None)
            }
            _ => {
                kinds[2] += 1;
                (random_script(&mut rng), None)
            }
        };
        if let Err(e) = check(&script, expected.as_deref(), &mut fds) {
            findings += 1;
            let path = save(&corpus, &format!("crash-{seed}-{n}.bin"), &script);
            eprintln!("FINDING #{n}: {e}\n  input saved to {}", path.display());
            if findings >= 10 {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"seed\":{seed},\"inputs\":{inputs},\"wellFormed\":{},\"mutated\":{},\"random\":{},\"corpus\":{replayed},\"findings\":{findings},\"seconds\":{secs:.1}}}",
        kinds[0], kinds[1], kinds[2]
    );
    if findings > 0 {
        std::process::exit(1);
    }
}
