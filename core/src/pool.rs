//! Per-thread pools of fixed-size byte buffers whose steady state allocates
//! nothing.
//!
//! ```text
//!   owning thread                                 any thread
//!   ┌──────────────────────────┐   get()        ┌──────────────┐
//!   │ Pool                     │──PoolBuf──────▶│ fill, send,  │
//!   │  local: Vec<Box<[u8]>>   │                │ parse ...    │
//!   │   ▲ drained in a batch   │                └──────┬───────┘
//!   │   │ when local is empty  │                       │ drop(PoolBuf)
//!   │  returns: ArrayQueue ◀───┼───────────────────────┘
//!   └──────────────────────────┘
//! ```
//!
//! A [`Pool`] belongs to one thread (it is `Send` but not `Sync`, and `get`
//! takes `&mut self`). Every buffer is allocated once, in [`Pool::new`]. A
//! [`PoolBuf`] may travel to any thread; dropping it pushes the buffer onto its
//! home pool's bounded, lock-free return queue (`crossbeam_queue::ArrayQueue`,
//! allocated once too). When the local free list runs dry, `get` moves every
//! returned buffer back in one batch. Moving a `Box<[u8]>` moves a pointer:
//! after construction, `get` and drop allocate and free nothing (the
//! `pool_alloc` test counts allocations to prove it).
//!
//! Buffers are not zeroed on reuse: [`PoolBuf::as_mut_full`] exposes bytes left
//! by a previous user; the filled part ([`Deref`]) starts empty.
//!
//! The module needs no `unsafe`.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// What a pool shares with the buffers it lent: their way home.
struct Shared {
    /// Buffers returned from any thread, waiting for the owner to drain them.
    /// Its capacity is the pool's, so it can hold every buffer the pool owns.
    returns: ArrayQueue<Box<[u8]>>,
    /// Buffers that found the return queue full and were freed instead. The
    /// queue holds every buffer the pool owns, so this stays 0 unless a bug
    /// breaks that invariant; it is counted rather than panicking.
    dropped: AtomicU64,
}

/// Counters of a [`Pool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Calls to [`Pool::get`].
    pub gets: u64,
    /// Calls to [`Pool::get`] that found no free buffer and returned `None`.
    pub misses: u64,
    /// Buffers moved from the return queue back to the local free list.
    pub returned: u64,
    /// Buffers freed because the return queue was full (should stay 0).
    pub dropped: u64,
}

/// A pool of `capacity` buffers of `buf_len` bytes, owned by one thread.
pub struct Pool {
    /// Free buffers ready to hand out; its capacity is reserved up front.
    local: Vec<Box<[u8]>>,
    shared: Arc<Shared>,
    buf_len: usize,
    capacity: usize,
    gets: u64,
    misses: u64,
    returned: u64,
    /// `Pool` is `Send` but not `Sync`: one thread at a time owns it.
    _not_sync: PhantomData<Cell<()>>,
}

impl Pool {
    /// A pool of `capacity` buffers of `buf_len` bytes each, all allocated now.
    pub fn new(buf_len: usize, capacity: usize) -> Pool {
        let mut local = Vec::with_capacity(capacity);
        local.extend((0..capacity).map(|_| vec![0u8; buf_len].into_boxed_slice()));
        Pool {
            local,
            shared: Arc::new(Shared {
                // ArrayQueue needs a non-zero capacity; an empty pool never uses it.
                returns: ArrayQueue::new(capacity.max(1)),
                dropped: AtomicU64::new(0),
            }),
            buf_len,
            capacity,
            gets: 0,
            misses: 0,
            returned: 0,
            _not_sync: PhantomData,
        }
    }

    /// A free buffer (filled length 0), or `None` if all `capacity` buffers are
    /// lent out. Allocates nothing.
    #[inline]
    pub fn get(&mut self) -> Option<PoolBuf> {
        self.gets += 1;
        if self.local.is_empty() {
            self.drain_returns();
        }
        match self.local.pop() {
            Some(buf) => Some(PoolBuf { buf, len: 0, home: Arc::clone(&self.shared) }),
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Move every returned buffer to the local free list (one batch, so the
    /// shared queue is touched once per `capacity` gets in the steady state).
    #[cold]
    fn drain_returns(&mut self) {
        // `local` never grows past its reserved capacity: it and the queue
        // together hold at most the `capacity` buffers this pool made.
        while self.local.len() < self.local.capacity() {
            match self.shared.returns.pop() {
                Some(buf) => {
                    self.local.push(buf);
                    self.returned += 1;
                }
                None => break,
            }
        }
    }

    /// Free buffers: those on the local list plus those waiting in the return
    /// queue (the latter may change concurrently).
    pub fn available(&self) -> usize {
        self.local.len() + self.shared.returns.len()
    }

    /// Size of every buffer, in bytes.
    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// Number of buffers the pool owns (free or lent).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            gets: self.gets,
            misses: self.misses,
            returned: self.returned,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("buf_len", &self.buf_len)
            .field("capacity", &self.capacity)
            .field("available", &self.available())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A buffer lent by a [`Pool`]. `Send`: fill it on one thread, drop it on
/// another. Derefs to the filled part (`..len()`); [`as_mut_full`] gives the
/// whole buffer to write into, [`set_len`] marks how much is filled. Dropping
/// it returns the buffer to its pool.
///
/// [`as_mut_full`]: PoolBuf::as_mut_full
/// [`set_len`]: PoolBuf::set_len
pub struct PoolBuf {
    /// The storage; empty (no allocation) only after `drop` took it.
    buf: Box<[u8]>,
    len: usize,
    home: Arc<Shared>,
}

impl PoolBuf {
    /// The whole buffer, past the filled length; may hold a previous user's
    /// bytes.
    #[inline]
    pub fn as_mut_full(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Set the filled length.
    ///
    /// # Panics
    /// If `len > self.capacity()`: a caller bug that would otherwise expose a
    /// wrong frame length.
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.buf.len(),
            "PoolBuf::set_len({len}) beyond capacity {}",
            self.buf.len()
        );
        self.len = len;
    }

    /// Forget the contents (filled length 0).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Size of the whole buffer.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

impl Deref for PoolBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl DerefMut for PoolBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl Drop for PoolBuf {
    #[inline]
    fn drop(&mut self) {
        // Taking leaves an empty boxed slice behind, which owns no allocation.
        let buf = std::mem::take(&mut self.buf);
        if self.home.returns.push(buf).is_err() {
            // The rejected buffer is freed here; never panic in drop.
            self.home.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuf")
            .field("len", &self.len)
            .field("capacity", &self.buf.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_fill_and_return() {
        let mut pool = Pool::new(64, 2);
        assert_eq!((pool.available(), pool.capacity(), pool.buf_len()), (2, 2, 64));
        let mut b = pool.get().unwrap();
        assert_eq!((b.len(), b.capacity()), (0, 64));
        b.as_mut_full()[..3].copy_from_slice(b"abc");
        b.set_len(3);
        assert_eq!(&*b, b"abc");
        b[0] = b'x';
        assert_eq!(&*b, b"xbc");
        b.clear();
        assert!(b.is_empty());
        assert_eq!(pool.available(), 1);
        drop(b);
        assert_eq!(pool.available(), 2);
        assert_eq!(pool.stats(), PoolStats { gets: 1, misses: 0, returned: 0, dropped: 0 });
    }

    #[test]
    fn exhausted_pool_returns_none_until_a_buffer_comes_back() {
        let mut pool = Pool::new(8, 3);
        let held: Vec<PoolBuf> = (0..3).map(|_| pool.get().unwrap()).collect();
        assert!(pool.get().is_none());
        assert!(pool.get().is_none());
        assert_eq!(pool.available(), 0);
        let mut held = held;
        held.pop();
        assert_eq!(pool.available(), 1);
        let again = pool.get().expect("a returned buffer is reused");
        assert!(pool.get().is_none());
        assert_eq!(pool.stats(), PoolStats { gets: 7, misses: 3, returned: 1, dropped: 0 });
        drop(again);
        drop(held);
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn the_same_buffers_come_back() {
        let mut pool = Pool::new(16, 4);
        let first: Vec<*const u8> = {
            let bufs: Vec<PoolBuf> = (0..4).map(|_| pool.get().unwrap()).collect();
            bufs.iter().map(|b| b.buf.as_ptr()).collect()
        };
        for _ in 0..10 {
            let bufs: Vec<PoolBuf> = (0..4).map(|_| pool.get().unwrap()).collect();
            let mut ptrs: Vec<*const u8> = bufs.iter().map(|b| b.buf.as_ptr()).collect();
            let mut want = first.clone();
            ptrs.sort();
            want.sort();
            assert_eq!(ptrs, want, "no buffer is lost or newly allocated");
            assert!(pool.get().is_none(), "capacity is respected");
        }
    }

    #[test]
    fn cross_thread_return() {
        let mut pool = Pool::new(32, 8);
        let (tx, rx) = std::sync::mpsc::channel::<PoolBuf>();
        let consumer = std::thread::spawn(move || {
            let mut sum = 0u64;
            for b in rx {
                sum += u64::from(b[0]);
                // Dropped here, on the consumer thread.
            }
            sum
        });
        let mut expect = 0u64;
        let mut sent = 0u64;
        while sent < 1_000 {
            let Some(mut b) = pool.get() else {
                std::thread::yield_now();
                continue;
            };
            let v = (sent % 251) as u8;
            b.as_mut_full()[0] = v;
            b.set_len(1);
            expect += u64::from(v);
            tx.send(b).unwrap();
            sent += 1;
        }
        drop(tx);
        assert_eq!(consumer.join().unwrap(), expect);
        assert_eq!(pool.available(), 8);
        let s = pool.stats();
        assert_eq!(s.gets - s.misses, 1_000);
        assert_eq!(s.dropped, 0);
        assert!(s.returned >= 1_000 - 8, "all but the first 8 gets reused returned buffers");
    }

    #[test]
    fn full_return_queue_drops_and_counts() {
        let mut pool = Pool::new(4, 1);
        let b = pool.get().unwrap();
        // Break the invariant on purpose: fill the queue with a stranger.
        pool.shared.returns.push(vec![0u8; 4].into_boxed_slice()).unwrap();
        drop(b);
        assert_eq!(pool.stats().dropped, 1);
        assert_eq!(pool.available(), 1);
    }

    #[test]
    fn buffers_outlive_their_pool() {
        let mut pool = Pool::new(4, 2);
        let b = pool.get().unwrap();
        drop(pool);
        drop(b); // Goes to the orphaned queue, freed with the last Arc.
    }

    #[test]
    fn empty_pool() {
        let mut pool = Pool::new(4, 0);
        assert!(pool.get().is_none());
        assert_eq!(pool.stats().misses, 1);
        let mut zero = Pool::new(0, 1);
        let mut b = zero.get().unwrap();
        assert_eq!(b.as_mut_full().len(), 0);
    }

    #[test]
    #[should_panic(expected = "beyond capacity")]
    fn set_len_beyond_capacity_panics() {
        let mut pool = Pool::new(4, 1);
        pool.get().unwrap().set_len(5);
    }

    #[test]
    fn pool_is_send_and_poolbuf_is_send() {
        fn send<T: Send>() {}
        send::<Pool>();
        send::<PoolBuf>();
    }
}
