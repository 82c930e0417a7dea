//! A global allocator that counts the allocations made by the current thread,
//! for tests that prove a steady state allocates nothing. Tests run in
//! parallel threads, so the count is per thread. Include it with
//! `#[path = "support/alloc_count.rs"] mod alloc_count;` — it installs itself
//! as the test binary's global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// The group this thread also counts into (see [`count_into`]).
    static GROUP: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Groups of threads whose allocations are summed (see [`count_into`]).
pub const GROUPS: usize = 8;

static GROUP_ALLOCATIONS: [AtomicU64; GROUPS] = [const { AtomicU64::new(0) }; GROUPS];

/// From now on, also count this thread's allocations into `group` (below
/// [`GROUPS`]), readable from any thread with [`group_count`]: for threads a
/// test does not run itself, such as a library's worker threads.
#[allow(dead_code)]
pub fn count_into(group: usize) {
    GROUP.with(|g| g.set(Some(group % GROUPS)));
}

/// Allocations made so far by the threads counted into `group`.
#[allow(dead_code)]
pub fn group_count(group: usize) -> u64 {
    GROUP_ALLOCATIONS[group % GROUPS].load(Ordering::Relaxed)
}

fn counted() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
    if let Some(g) = GROUP.with(Cell::get) {
        GROUP_ALLOCATIONS[g].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts allocations made by the current thread (tests run in parallel).
pub struct Counting;

// SAFETY: forwards every call to `System` unchanged; the counters are
// const-initialised thread-local `Cell`s and static atomics, which need no
// allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations made by this thread so far.
pub fn count() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[global_allocator]
static ALLOC: Counting = Counting;
