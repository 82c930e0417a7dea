//! The receive side of the pipeline: a receive thread's loop, and the
//! batch format it writes and the processing thread reads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use tickwire_core::Line;
use tickwire_core::pool::{Pool, PoolBuf};
use tickwire_transports::idle::Idler;
use tickwire_transports::{DisconnectReason, SubEvent};

use super::{Cmd, Item, RECORD_HEADER, REQUEST_WAIT, Shared, ThreadCounters};

/// Tries for a free buffer that only yield, before the receive thread
/// sleeps [`BUFFER_WAIT`] between tries.
const SPINS_BEFORE_SLEEP: u32 = 8;

/// Sleep between tries for a free buffer once yielding did not bring one.
const BUFFER_WAIT: Duration = Duration::from_micros(20);

/// The records of a batch: (line, packet, kernel receive stamp).
pub(super) struct Records<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for Records<'a> {
    type Item = (Line, &'a [u8], Option<u64>);

    fn next(&mut self) -> Option<Self::Item> {
        let (head, rest) = self.0.split_first_chunk::<RECORD_HEADER>()?;
        let line = match head[0] {
            0 => Line::A,
            1 => Line::B,
            _ => Line::Unicast,
        };
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let stamp = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        // The receive thread wrote `len` bytes after the header; a short rest
        // would be a bug of this module, and ends the batch rather than panic.
        let (packet, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some((line, packet, (stamp != u64::MAX).then_some(stamp)))
    }
}

/// Append one record to `buf`; false (and nothing written) if it does not fit.
fn push_record(buf: &mut PoolBuf, line: Line, packet: &[u8], kernel_rx: Option<u64>) -> bool {
    let at = buf.len();
    let end = at + RECORD_HEADER + packet.len();
    let Some(dst) = buf.as_mut_full().get_mut(at..end) else { return false };
    let (head, body) = dst.split_at_mut(RECORD_HEADER);
    head[0] = match line {
        Line::A => 0,
        Line::B => 1,
        Line::Unicast => 2,
    };
    head[1..4].fill(0);
    head[4..8].copy_from_slice(&(packet.len() as u32).to_le_bytes());
    head[8..16].copy_from_slice(&kernel_rx.unwrap_or(u64::MAX).to_le_bytes());
    body.copy_from_slice(packet);
    buf.set_len(end);
    true
}

/// One receive thread: its transport and the batcher its packets go to.
pub(super) struct ReceiveThread {
    pub(super) transport: Box<dyn tickwire_transports::Subscriber>,
    pub(super) owns_requests: bool,
    pub(super) idler: Idler,
    pub(super) batcher: Batcher,
}

impl ReceiveThread {
    pub(super) fn run(mut self) {
        let shared = Arc::clone(&self.batcher.shared);
        while !shared.stop.load(Ordering::Relaxed) {
            let mut work = self.commands();
            if self.batcher.batch.is_none() && !self.batcher.take_buffer() {
                continue;
            }
            let timeout = if work > 0 {
                Some(Duration::ZERO)
            } else if self.owns_requests {
                self.idler.timeout(Some(REQUEST_WAIT))
            } else {
                self.idler.timeout(Some(super::super::MAX_POLL_WAIT))
            };
            let batcher = &mut self.batcher;
            let polled = self.transport.poll(timeout, &mut |ev| {
                work += 1;
                batcher.on_event(ev);
            });
            batcher.flush();
            if let Err(e) = polled
                && !shared.hand_over(Item::Error(e), batcher.counters())
            {
                break;
            }
            *shared.stats[batcher.index].lock().unwrap_or_else(|p| p.into_inner()) =
                self.transport.stats();
            self.idler.record(work > 0);
        }
    }

    /// Carry out the processing thread's requests; returns how many.
    fn commands(&mut self) -> usize {
        if !self.owns_requests {
            return 0;
        }
        let shared = &*self.batcher.shared;
        let counters = &shared.counters[self.batcher.index];
        let mut n = 0;
        while let Some(cmd) = shared.cmds.pop() {
            n += 1;
            match cmd {
                // The buffer returns to the processing thread's pool on drop.
                Cmd::Request(buf) => {
                    if let Err(e) = self.transport.send_request(&buf) {
                        counters.request_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("client: cannot send a request: {e}; it will be retried");
                    }
                }
                Cmd::Reconnect => {
                    if let Err(e) = self.transport.reconnect() {
                        let reason = DisconnectReason::Io(format!("connecting: {e}"));
                        shared.hand_over(Item::Disconnected(reason), counters);
                    }
                }
            }
        }
        n
    }
}

/// Packs a receive thread's packets into batches from its own pool.
pub(super) struct Batcher {
    /// The line this thread's feed packets are (its transport calls them A).
    pub(super) relabel: Line,
    pub(super) pool: Pool,
    pub(super) shared: Arc<Shared>,
    pub(super) index: usize,
    pub(super) batch: Option<PoolBuf>,
    /// Consecutive failed tries for a buffer.
    pub(super) misses: u32,
}

impl Batcher {
    fn counters(&self) -> &ThreadCounters {
        &self.shared.counters[self.index]
    }

    /// Get a buffer to fill, or wait a moment for one; false if none yet.
    /// The processing thread is behind by a whole pool, milliseconds of
    /// work: after a few yields the thread sleeps between tries, leaving the
    /// CPU to it rather than spinning against it.
    fn take_buffer(&mut self) -> bool {
        self.batch = self.pool.get();
        if self.batch.is_some() {
            self.misses = 0;
            return true;
        }
        if self.misses == 0 {
            self.counters().buffer_waits.fetch_add(1, Ordering::Relaxed);
        }
        self.misses += 1;
        if self.misses <= SPINS_BEFORE_SLEEP {
            thread::yield_now();
        } else {
            thread::sleep(BUFFER_WAIT);
        }
        false
    }

    fn on_event(&mut self, ev: SubEvent<'_>) {
        match ev {
            SubEvent::Packet { line, packet, kernel_rx_ns } => {
                let line = if line == Line::A { self.relabel } else { line };
                loop {
                    if let Some(b) = &mut self.batch
                        && push_record(b, line, packet, kernel_rx_ns)
                    {
                        self.counters().packets.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    // Full (or none): hand it over and start another.
                    self.flush();
                    while !self.take_buffer() {
                        if self.shared.stop.load(Ordering::Relaxed) {
                            return;
                        }
                    }
                }
            }
            SubEvent::Connected => {
                self.flush();
                self.shared.hand_over(Item::Connected, self.counters());
            }
            SubEvent::Disconnected(reason) => {
                self.flush();
                self.shared.hand_over(Item::Disconnected(reason), self.counters());
            }
        }
    }

    /// Hand the batch being filled over, if it holds anything.
    fn flush(&mut self) {
        if self.batch.as_ref().is_some_and(|b| !b.is_empty())
            && let Some(b) = self.batch.take()
        {
            self.counters().batches.fetch_add(1, Ordering::Relaxed);
            self.shared.hand_over(Item::Batch(b), self.counters());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_full_batch_takes_nothing() {
        let mut pool = Pool::new(RECORD_HEADER * 2 + 7, 1);
        let mut b = pool.get().unwrap();
        assert!(push_record(&mut b, Line::B, b"abc", Some(42)));
        assert!(push_record(&mut b, Line::A, b"defg", None));
        let full = b.len();
        assert!(!push_record(&mut b, Line::A, b"x", None), "no room left");
        assert_eq!(b.len(), full, "a record that does not fit writes nothing");
        let got: Vec<_> = Records(&b).collect();
        assert_eq!(got, [(Line::B, &b"abc"[..], Some(42)), (Line::A, &b"defg"[..], None)]);
    }

    #[test]
    fn a_truncated_batch_ends_the_records_without_panicking() {
        let mut pool = Pool::new(64, 1);
        let mut b = pool.get().unwrap();
        assert!(push_record(&mut b, Line::Unicast, b"hello", None));
        let whole = b.len();
        for cut in 0..whole {
            assert_eq!(Records(&b[..cut]).count(), 0, "cut at {cut}");
        }
        assert_eq!(Records(&b).next(), Some((Line::Unicast, &b"hello"[..], None)));
    }
}
