//! Proves the buffer pool's steady state allocates nothing: a counting global
//! allocator counts every allocation and deallocation made by the measuring
//! threads (the pool's owner and a second thread that drops buffers handed to
//! it) during 1,000,000 get / fill / drop cycles after a warm-up.
//!
//! Only threads that set the thread-local `COUNTING` flag are counted, so the
//! test harness's own allocations cannot disturb the measurement. This file
//! holds only this test.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use crossbeam_queue::ArrayQueue;
use tickwire_core::pool::{Pool, PoolBuf};

/// Wraps the system allocator and counts calls made on flagged threads.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // `const` init and no destructor: reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    // `try_with`: during thread teardown the slot may be gone; count nothing.
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the counters are atomics and
// the thread-local flag neither allocates nor frees.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Measured cycles, as the brief asks: enough that any per-cycle or
/// per-batch allocation would show up many times over.
const CYCLES: u64 = 1_000_000;
/// Cycles before measuring: lets every buffer make a round trip through both
/// paths (local drop and cross-thread return) at least once.
const WARM_UP: u64 = 10_000;
/// Buffers in the pool: a typical receive batch.
const POOL_CAPACITY: usize = 64;
/// Bytes per buffer: one Ethernet-MTU datagram.
const BUF_LEN: usize = 1500;
/// Bytes written per cycle vary from 1 to this: a few feed messages; filling
/// whole buffers would only make the debug build slower, not the test stronger.
const FILL_MAX: u64 = 128;

#[test]
fn steady_state_get_fill_drop_allocates_nothing() {
    let mut pool = Pool::new(BUF_LEN, POOL_CAPACITY);
    // The hand-off to the second thread is itself preallocated (std's mpsc
    // channel would allocate blocks as messages flow).
    let handoff: Arc<ArrayQueue<PoolBuf>> = Arc::new(ArrayQueue::new(POOL_CAPACITY));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    let returner = {
        let (handoff, measuring, stop) =
            (Arc::clone(&handoff), Arc::clone(&measuring), Arc::clone(&stop));
        thread::spawn(move || {
            let mut checksum = 0u64;
            let mut dropped = 0u64;
            loop {
                // Count this thread's allocations only once measurement began.
                if measuring.load(Ordering::Acquire) {
                    COUNTING.with(|c| c.set(true));
                }
                match handoff.pop() {
                    Some(buf) => {
                        checksum += u64::from(buf[0]) + buf.len() as u64;
                        dropped += 1;
                        drop(buf); // Back to the pool's return queue.
                    }
                    None if stop.load(Ordering::Acquire) && handoff.is_empty() => break,
                    None => std::hint::spin_loop(),
                }
            }
            COUNTING.with(|c| c.set(false));
            (checksum, dropped)
        })
    };

    let mut checksum = 0u64;
    let mut sent = 0u64;
    let mut cycle = |i: u64, pool: &mut Pool| {
        let mut buf = loop {
            match pool.get() {
                Some(b) => break b,
                None => std::hint::spin_loop(), // All lent: wait for returns.
            }
        };
        let n = 1 + (i % FILL_MAX) as usize;
        buf.as_mut_full()[..n].fill(i as u8);
        buf.set_len(n);
        if i % 2 == 0 {
            drop(buf); // Same-thread return.
        } else {
            checksum += u64::from(i as u8) + n as u64;
            sent += 1;
            let mut b = buf;
            while let Err(back) = handoff.push(b) {
                b = back;
                std::hint::spin_loop();
            }
        }
    };

    for i in 0..WARM_UP {
        cycle(i, &mut pool);
    }
    // The instrument works: an allocation on a flagged thread is counted.
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(vec![0u8; 16]));
    COUNTING.with(|c| c.set(false));
    assert_eq!((ALLOCS.swap(0, Ordering::Relaxed), FREES.swap(0, Ordering::Relaxed)), (1, 1));

    measuring.store(true, Ordering::Release);
    COUNTING.with(|c| c.set(true));
    for i in WARM_UP..WARM_UP + CYCLES {
        cycle(i, &mut pool);
    }
    COUNTING.with(|c| c.set(false));
    let (allocs, frees) = (ALLOCS.load(Ordering::Relaxed), FREES.load(Ordering::Relaxed));
    stop.store(true, Ordering::Release);
    let (their_checksum, dropped) = returner.join().unwrap();

    assert_eq!(allocs, 0, "allocations in the steady state");
    assert_eq!(frees, 0, "deallocations in the steady state");
    // The cycles really happened, across both threads.
    assert_eq!(dropped, sent);
    assert_eq!(sent, (WARM_UP + CYCLES) / 2);
    assert_eq!(their_checksum, checksum);
    let s = pool.stats();
    assert_eq!(s.gets - s.misses, WARM_UP + CYCLES, "successful gets");
    assert_eq!(s.dropped, 0);
    assert_eq!(pool.available(), POOL_CAPACITY);
}
