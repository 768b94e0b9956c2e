//! The addon's global allocator: small allocations go to the system allocator, large
//! ones ([`MAPPED_BYTES`] and up) are anonymous memory mappings of their own, unmapped
//! when freed, except for a few recently freed ones kept for reuse (at most
//! [`CACHED_BYTES`] in all).
//!
//! Why: a channel's buffers are large (the 256 KiB receive buffer, a send queue that
//! grows to megabytes under a burst, a large message's payload). glibc's malloc maps
//! chunks of 128 KiB and up too, but the first time it frees one it raises its mmap
//! threshold to that size (up to 32 MiB), and from then on such chunks come from the
//! heap, where the long-lived small allocations between them keep freed memory from
//! going back to the OS. A process that opens and closes channels for hours then grows
//! its RSS without leaking anything (SOAK.md has the curves). Mapping our large buffers
//! ourselves means glibc never sees one, so the addon never moves the host process's
//! threshold, and a closed channel's memory leaves RSS.
//!
//! Fresh mappings cost a page fault per page touched, which is what made glibc raise
//! its threshold in the first place: a stream of 1 MiB messages would fault in a new
//! payload buffer for each. So freed mappings of up to [`CACHED_ONE_BYTES`] are kept (the
//! oldest unmapped first once [`CACHED_BYTES`] or [`CACHED_SLOTS`] is reached) and handed
//! out again for an allocation of the same size class. Classes are quarter steps between
//! powers of two (128, 160, 192, 224, 256, 320 KiB, ...), so a mapping is at most a
//! quarter larger than asked for; the untouched end costs address space, not memory.
//!
//! The cache is behind a try-lock: an allocation that finds it busy (another thread in
//! the middle of one) maps or unmaps directly instead of waiting. Nothing here
//! allocates, blocks or panics.
//!
//! Installed in the Node addon with `#[global_allocator]`; it only serves the Rust code
//! of the library it is linked into, never Node's or V8's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::num::NonZeroUsize;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// Allocations of at least this many bytes are mappings of their own (glibc's default
/// mmap threshold, so nothing we allocate ever moves it).
pub const MAPPED_BYTES: usize = 128 << 10;

/// At most this many bytes of freed mappings are kept for reuse, process-wide.
pub const CACHED_BYTES: usize = 16 << 20;

/// Freed mappings larger than this are always unmapped.
pub const CACHED_ONE_BYTES: usize = 8 << 20;

/// At most this many freed mappings are kept.
pub const CACHED_SLOTS: usize = 8;

/// A mapping's alignment is at least this (the smallest page size of any platform we
/// build for). Larger alignments go to the system allocator.
const MIN_PAGE: usize = 4096;

/// The process's large-allocation state (see the module docs).
static PAGES: Pages = Pages::new();

/// The global allocator (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct PageAlloc;

// SAFETY: forwards to `Pages`, whose methods keep GlobalAlloc's contract (see there).
unsafe impl GlobalAlloc for PageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { PAGES.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { PAGES.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { PAGES.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe { PAGES.realloc(p, layout, new_size) }
    }
}

fn is_mapped(layout: Layout) -> bool {
    layout.size() >= MAPPED_BYTES && layout.align() <= MIN_PAGE
}

/// The length of the mapping that serves `size` bytes: `size` rounded up to a quarter
/// step of its power of two (a multiple of the page size, for sizes from MAPPED_BYTES).
fn class(size: usize) -> usize {
    let top = (usize::BITS - 1).saturating_sub(size.leading_zeros());
    let step = (1usize << top.saturating_sub(2)).max(MIN_PAGE);
    size.div_ceil(step).saturating_mul(step)
}

/// A freed mapping waiting for reuse.
#[derive(Debug, Clone, Copy)]
struct Slot {
    addr: usize,
    len: usize,
    /// Lower is older.
    age: u64,
}

#[derive(Debug)]
struct Cache {
    slots: [Option<Slot>; CACHED_SLOTS],
    clock: u64,
}

impl Cache {
    /// Bytes of the mappings waiting in the cache.
    fn bytes(&self) -> usize {
        self.slots.iter().flatten().map(|s| s.len).sum()
    }
}

/// Large allocations and the cache of freed mappings. One static instance serves the
/// process; tests make their own.
#[derive(Debug)]
struct Pages {
    busy: AtomicBool,
    cache: UnsafeCell<Cache>,
}

// SAFETY: `cache` is only reached through `with_cache`, which holds `busy` for the
// duration: one thread at a time.
unsafe impl Sync for Pages {}

impl Pages {
    const fn new() -> Self {
        Pages {
            busy: AtomicBool::new(false),
            cache: UnsafeCell::new(Cache {
                slots: [None; CACHED_SLOTS],
                clock: 0,
            }),
        }
    }

    /// Runs `f` on the cache if no other thread is using it; None if one is.
    fn with_cache<R>(&self, f: impl FnOnce(&mut Cache) -> R) -> Option<R> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: `busy` is ours until the store below, so no other reference exists.
        let r = f(unsafe { &mut *self.cache.get() });
        self.busy.store(false, Ordering::Release);
        Some(r)
    }

    /// A cached mapping of exactly `len` bytes, taken out of the cache.
    fn take(&self, len: usize) -> Option<*mut u8> {
        self.with_cache(|c| {
            let slot = c
                .slots
                .iter_mut()
                .find(|s| s.is_some_and(|s| s.len == len))?;
            Some(slot.take()?.addr as *mut u8)
        })
        .flatten()
    }

    /// Keeps a freed mapping for reuse, or unmaps it; unmaps what it pushes out.
    ///
    /// # Safety
    ///
    /// `p` must be a live mapping of `len` bytes that nothing uses any more.
    unsafe fn give_back(&self, p: *mut u8, len: usize) {
        let mut evicted = [None; CACHED_SLOTS];
        let kept = len <= CACHED_ONE_BYTES
            && self
                .with_cache(|c| {
                    let mut n = 0;
                    while c.bytes() + len > CACHED_BYTES || c.slots.iter().all(Option::is_some) {
                        let oldest = c
                            .slots
                            .iter_mut()
                            .filter(|s| s.is_some())
                            .min_by_key(|s| s.map_or(u64::MAX, |s| s.age));
                        let Some(s) = oldest.and_then(Option::take) else {
                            break;
                        };
                        if let Some(e) = evicted.get_mut(n) {
                            *e = Some(s);
                        }
                        n += 1;
                    }
                    let Some(free) = c.slots.iter_mut().find(|s| s.is_none()) else {
                        return false;
                    };
                    c.clock += 1;
                    *free = Some(Slot {
                        addr: p as usize,
                        len,
                        age: c.clock,
                    });
                    true
                })
                .unwrap_or(false);
        for s in evicted.iter().flatten() {
            // SAFETY: an evicted slot was a freed mapping of `s.len` bytes, now out of
            // the cache, so nothing else can reach it.
            unsafe { unmap(s.addr as *mut u8, s.len) };
        }
        if !kept {
            // SAFETY: by this function's contract.
            unsafe { unmap(p, len) };
        }
    }

    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_mapped(layout) {
            // SAFETY: forwarded with the caller's guarantees (non-zero size).
            return unsafe { System.alloc(layout) };
        }
        let len = class(layout.size());
        self.take(len).unwrap_or_else(|| map(len))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
            // A fresh mapping is zero-filled: cheaper than clearing a cached one, whose
            // pages may be touched.
            map(class(layout.size()))
        } else {
            // SAFETY: as in alloc.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if is_mapped(layout) {
            // SAFETY: a mapped layout's pointer came from `alloc`/`realloc` here: a
            // mapping of class(size) bytes, and the caller is done with it.
            unsafe { self.give_back(p, class(layout.size())) }
        } else {
            // SAFETY: not mapped, so it came from System with this layout.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (for the Layout): the caller guarantees new_size, rounded up to the
        // alignment, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let q = match (is_mapped(layout), is_mapped(new_layout)) {
            // SAFETY: both small: System's own pointer, layout and new size.
            (false, false) => return unsafe { System.realloc(p, layout, new_size) },
            (true, true) => {
                let (old_len, new_len) = (class(layout.size()), class(new_size));
                if new_len == old_len {
                    return p; // the mapping already covers the new size
                }
                // Growing: a cached mapping of the new class saves faulting in new pages
                // (at the price of a copy). Otherwise the mapping itself is resized; to
                // shrink, that gives its end back to the OS.
                match (new_len > old_len).then(|| self.take(new_len)).flatten() {
                    Some(q) => q,
                    // SAFETY: p is a live mapping of old_len bytes.
                    None => return unsafe { remap(p, old_len, new_len) },
                }
            }
            // Between the system allocator and a mapping.
            // SAFETY: new_layout has a non-zero size (realloc's contract).
            _ => unsafe { self.alloc(new_layout) },
        };
        if !q.is_null() {
            // SAFETY: both blocks hold at least the smaller size and are distinct; p is
            // given back with the layout it was allocated with.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}

/// A new zero-filled private mapping of `len` bytes, or null.
fn map(len: usize) -> *mut u8 {
    let Some(len) = NonZeroUsize::new(len) else {
        return ptr::null_mut();
    };
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
    // no existing memory.
    match unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    } {
        Ok(p) => p.as_ptr().cast(),
        Err(_) => ptr::null_mut(),
    }
}

/// Removes a mapping of `len` bytes.
///
/// # Safety
///
/// `p` must be the start of a live mapping of `len` bytes that nothing uses any more.
unsafe fn unmap(p: *mut u8, len: usize) {
    if let Some(p) = NonNull::new(p) {
        // SAFETY: by this function's contract. munmap can only fail on bad arguments,
        // and a free has no way to report it: the mapping would stay, nothing else.
        let _ = unsafe { munmap(p.cast(), len) };
    }
}

/// Grows or shrinks a mapping, moving it if it must; null (and `p` untouched) on failure.
///
/// # Safety
///
/// `p` must be a live mapping of `old` bytes.
#[cfg(target_os = "linux")]
unsafe fn remap(p: *mut u8, old: usize, new: usize) -> *mut u8 {
    use nix::sys::mman::{mremap, MRemapFlags};
    let Some(start) = NonNull::new(p) else {
        return ptr::null_mut();
    };
    // SAFETY: by this function's contract; MAYMOVE lets the kernel move the pages (the
    // contents go with them) and the old address is then invalid, as realloc allows.
    match unsafe { mremap(start.cast(), old, new, MRemapFlags::MREMAP_MAYMOVE, None) } {
        Ok(q) => q.as_ptr().cast(),
        Err(_) => ptr::null_mut(),
    }
}

/// Where there is no mremap (macOS, FreeBSD): resizing a mapping maps anew and copies.
#[cfg(not(target_os = "linux"))]
use remap_by_copy as remap;

/// Grows or shrinks a mapping by mapping anew and copying (unmapping only the end of a
/// mapping would need it to end on a boundary of the OS's page size, which is not
/// always 4 KiB); null (and `p` untouched) on failure. Built on Linux for its test.
///
/// # Safety
///
/// `p` must be a live mapping of `old` bytes.
#[cfg(any(not(target_os = "linux"), test))]
unsafe fn remap_by_copy(p: *mut u8, old: usize, new: usize) -> *mut u8 {
    let q = map(new);
    if !q.is_null() {
        // SAFETY: p has `old` bytes, q has `new`, they are distinct mappings; p is then
        // unused, as realloc allows.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old.min(new));
            unmap(p, old);
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    /// The mapping `p` lies in, as /proc/self/maps lists it.
    #[cfg(target_os = "linux")]
    fn mapping_containing(p: usize) -> Option<(usize, usize)> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().find_map(|line| {
            let (a, b) = line.split_whitespace().next()?.split_once('-')?;
            let a = usize::from_str_radix(a, 16).ok()?;
            let b = usize::from_str_radix(b, 16).ok()?;
            (a..b).contains(&p).then_some((a, b))
        })
    }

    fn pattern(i: usize, seed: u8) -> u8 {
        (i as u8).wrapping_mul(31).wrapping_add(seed)
    }

    fn fill(p: *mut u8, len: usize, seed: u8) {
        let s = unsafe { std::slice::from_raw_parts_mut(p, len) };
        for (i, b) in s.iter_mut().enumerate() {
            *b = pattern(i, seed);
        }
    }

    fn check(p: *const u8, len: usize, seed: u8) {
        let s = unsafe { std::slice::from_raw_parts(p, len) };
        for (i, b) in s.iter().enumerate() {
            assert_eq!(*b, pattern(i, seed), "byte {i}");
        }
    }

    #[test]
    fn classes_are_page_multiples_at_most_a_quarter_larger() {
        for size in (MAPPED_BYTES..(64 << 20)).step_by(4093) {
            let c = class(size);
            assert!(c >= size && c % MIN_PAGE == 0, "{size} -> {c}");
            assert!((c - size) * 4 <= size, "{size} -> {c}");
            assert_eq!(class(c), c, "a class is its own class");
        }
        assert_eq!(class(1 << 20), 1 << 20);
        assert_eq!(class((1 << 20) + 1), (1 << 20) + (256 << 10));
        assert_eq!(class(usize::MAX), usize::MAX); // saturates instead of overflowing
        assert_eq!(class(0), 0);
    }

    #[test]
    fn large_allocations_are_page_aligned_zeroed_mappings_kept_for_reuse_when_freed() {
        let pages = Pages::new();
        for size in [MAPPED_BYTES, MAPPED_BYTES + 1, 256 << 10, (9 << 20) + 1] {
            let l = layout(size);
            let p = unsafe { pages.alloc_zeroed(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % MIN_PAGE, 0);
            let s = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(s.iter().all(|b| *b == 0));
            fill(p, size, 7);
            check(p, size, 7);
            #[cfg(target_os = "linux")]
            {
                let (start, end) = mapping_containing(p as usize).unwrap();
                assert!(end - start >= size);
            }
            unsafe { pages.dealloc(p, l) };
        }
        // The one past CACHED_ONE_BYTES was unmapped; the others wait in the cache.
        let cache = pages.with_cache(|c| (c.slots.iter().flatten().count(), c.bytes()));
        assert_eq!(
            cache,
            Some((3, class(MAPPED_BYTES + 1) + MAPPED_BYTES + (256 << 10)))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_freed_mapping_is_reused_for_its_class_and_the_cache_stays_bounded() {
        let pages = Pages::new();
        let l = layout(1 << 20);
        let p = unsafe { pages.alloc(l) };
        fill(p, 1 << 20, 1);
        unsafe { pages.dealloc(p, l) };
        // Same class (1 MiB - 5 rounds up to 1 MiB): the same pages come back.
        let q = unsafe { pages.alloc(layout((1 << 20) - 5)) };
        assert_eq!(q, p);
        unsafe { pages.dealloc(q, layout((1 << 20) - 5)) };
        // Another class does not take it.
        let r = unsafe { pages.alloc(layout(300 << 10)) };
        assert_ne!(r, p);
        unsafe { pages.dealloc(r, layout(300 << 10)) };

        // Fill past both bounds: 20 mappings of 3 MiB.
        let many: Vec<*mut u8> = (0..20)
            .map(|_| unsafe { pages.alloc(layout(3 << 20)) })
            .collect();
        for &m in &many {
            assert!(!m.is_null());
            unsafe { pages.dealloc(m, layout(3 << 20)) };
        }
        let (count, bytes) = pages
            .with_cache(|c| (c.slots.iter().flatten().count(), c.bytes()))
            .unwrap();
        assert!(
            count <= CACHED_SLOTS && bytes <= CACHED_BYTES,
            "{count} {bytes}"
        );
        // The newest were kept (and are still mapped); the oldest, the 1 MiB and the
        // 320 KiB ones were pushed out.
        let kept = CACHED_BYTES / (3 << 20);
        assert_eq!(count, kept);
        let mut cached: Vec<usize> = pages
            .with_cache(|c| c.slots.iter().flatten().map(|s| s.addr).collect())
            .unwrap();
        cached.sort_unstable();
        let mut newest: Vec<usize> = many[many.len() - kept..]
            .iter()
            .map(|&m| m as usize)
            .collect();
        newest.sort_unstable();
        assert_eq!(cached, newest);
        for &m in &newest {
            assert!(mapping_containing(m).is_some());
        }
    }

    #[test]
    fn small_allocations_and_large_alignments_go_to_the_system_allocator() {
        let pages = Pages::new();
        for l in [
            layout(1),
            layout(MAPPED_BYTES - 1),
            Layout::from_size_align(MAPPED_BYTES, 32 * MIN_PAGE).unwrap(),
        ] {
            let p = unsafe { pages.alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % l.align(), 0);
            fill(p, l.size(), 3);
            unsafe { pages.dealloc(p, l) };
        }
        assert_eq!(pages.with_cache(|c| c.bytes()), Some(0));
    }

    #[test]
    fn realloc_keeps_the_contents_across_every_pair_of_sizes() {
        let pages = Pages::new();
        let sizes = [
            16,
            MAPPED_BYTES - 1,
            MAPPED_BYTES,
            MAPPED_BYTES + 100,
            1 << 20,
            (3 << 20) + 5,
        ];
        // Twice: the second round finds the first round's mappings in the cache.
        for round in 0..2 {
            for &from in &sizes {
                for &to in &sizes {
                    let l = layout(from);
                    let p = unsafe { pages.alloc(l) };
                    assert!(!p.is_null());
                    fill(p, from, 11);
                    let q = unsafe { pages.realloc(p, l, to) };
                    assert!(!q.is_null(), "round {round}: {from} -> {to}");
                    check(q, from.min(to), 11);
                    fill(q, to, 12); // the whole new size is usable
                    unsafe { pages.dealloc(q, layout(to)) };
                }
            }
        }
    }

    #[test]
    fn a_buffer_grown_through_the_threshold_and_shrunk_back_keeps_its_bytes() {
        // The send queue's pattern: doubling growth, then shrinking after a burst.
        let pages = Pages::new();
        for _ in 0..3 {
            let mut cap = 1024;
            let mut p = unsafe { pages.alloc(layout(cap)) };
            let mut len = 0;
            while cap < (8 << 20) {
                let s = unsafe { std::slice::from_raw_parts_mut(p.add(len), cap - len) };
                for (i, b) in s.iter_mut().enumerate() {
                    *b = ((len + i) % 251) as u8;
                }
                len = cap;
                p = unsafe { pages.realloc(p, layout(cap), cap * 2) };
                assert!(!p.is_null());
                cap *= 2;
            }
            p = unsafe { pages.realloc(p, layout(cap), 256 << 10) };
            let s = unsafe { std::slice::from_raw_parts(p, 256 << 10) };
            assert!(s.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
            unsafe { pages.dealloc(p, layout(256 << 10)) };
        }
    }

    #[test]
    fn resizing_by_copy_keeps_the_contents() {
        // The macOS/FreeBSD path, run here too.
        for (old, new) in [
            (256 << 10, 1 << 20),
            (1 << 20, 160 << 10),
            (192 << 10, 192 << 10),
        ] {
            let p = map(old);
            fill(p, old, 5);
            let q = unsafe { remap_by_copy(p, old, new) };
            assert!(!q.is_null());
            check(q, old.min(new), 5);
            fill(q, new, 6);
            unsafe { unmap(q, new) };
        }
    }

    #[test]
    fn threads_sharing_the_cache_never_get_the_same_mapping() {
        // Four threads allocate, fill, grow and free mappings of a few classes at once:
        // a mapping handed to two of them would show as the other's bytes.
        let pages = Pages::new();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let pages = &pages;
                s.spawn(move || {
                    for i in 0..100usize {
                        let size = [MAPPED_BYTES, 200 << 10, 1 << 20][i % 3];
                        let p = unsafe { pages.alloc(layout(size)) };
                        assert!(!p.is_null());
                        fill(p, size, t);
                        let q = unsafe { pages.realloc(p, layout(size), size * 2) };
                        assert!(!q.is_null());
                        check(q, size, t);
                        unsafe { pages.dealloc(q, layout(size * 2)) };
                    }
                });
            }
        });
        let (bytes, mut addrs) = pages
            .with_cache(|c| {
                let addrs: Vec<usize> = c.slots.iter().flatten().map(|s| s.addr).collect();
                (c.bytes(), addrs)
            })
            .unwrap();
        assert!(bytes <= CACHED_BYTES);
        let cached = addrs.len();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), cached, "a mapping is in the cache twice");
    }

    #[test]
    fn a_busy_cache_is_bypassed_not_waited_for() {
        let pages = Pages::new();
        let l = layout(512 << 10);
        let p = unsafe { pages.alloc(l) };
        unsafe { pages.dealloc(p, l) };
        pages.busy.store(true, Ordering::SeqCst); // as if another thread held it
        let q = unsafe { pages.alloc(l) };
        assert!(!q.is_null());
        assert_ne!(q, p, "the cache was busy: a fresh mapping");
        unsafe { pages.dealloc(q, l) }; // unmapped, not cached
        pages.busy.store(false, Ordering::SeqCst);
        assert_eq!(pages.with_cache(|c| c.bytes()), Some(class(512 << 10)));
    }
}
