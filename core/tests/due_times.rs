//! Issue 26, § 4.3: at a fixed rate R from the session start S, the message
//! with sequence s is due at exactly S + (s − 1)/R, and the timing blocks say
//! so for every message, whatever the server's loop does: natural batching or
//! a coalescing bound, a loop that runs late (the monotonic clock jumps), and
//! a wall clock read some µs after the monotonic one (a preempted thread).
//!
//! The driver below is the server's loop (`tickwire_server::publish_and_tell`,
//! steps 1-3) on a fake clock: take what is due from the [`Pacer`], push each
//! message with its due instants, seal when caught up, run the timers, drain.

use std::time::Duration;

use tickwire_core::pacing::Pacer;
use tickwire_core::publisher::{Sequencer, SequencerConfig};
use tickwire_core::wire::{Packet, PacketKind, PacketRepr};
use tickwire_core::{Instant, Message, Side, Trade};

/// The wall clock of the fake host at monotonic 0.
const WALL0: u64 = 1_764_000_000_000_000_000;
/// The server's largest burst per loop iteration (`MAX_BATCH`).
const MAX_BATCH: u64 = 512;

/// A deterministic generator (xorshift) for the clock's misbehaviour.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn trade(n: u64) -> Message {
    Message::Trade(Trade {
        symbol: (n % 16) as u32,
        side: Side::Buy,
        price: 1_000_000 + n as i64,
        qty: 1,
        exch_ts: n,
        symbol_seq: 0,
    })
}

/// Every message's due time on the wire, by sequence (index s − 1), from
/// the Data packets' timing blocks (§ 4.3's interpolation).
fn due_times(packets: &[Vec<u8>]) -> Vec<u64> {
    let mut out = Vec::new();
    for b in packets {
        let p = Packet::new_checked(&b[..]).unwrap();
        let r = PacketRepr::parse(&p).unwrap();
        if r.kind != PacketKind::Data {
            continue;
        }
        let t = p.timing().expect("every Data packet carries a timing block");
        assert_eq!(r.first_seq.0, out.len() as u64 + 1, "Data packets in sequence order");
        let n = u64::from(r.count);
        for i in 0..n {
            let due = if n <= 1 || t.last_due <= t.first_due {
                t.first_due
            } else {
                let span = u128::from(t.last_due - t.first_due);
                t.first_due + (span * u128::from(i) / u128::from(n - 1)) as u64
            };
            out.push(due);
        }
    }
    out
}

/// Run a paced session of `messages` at `rate` on the fake clock; `late`
/// makes the loop run late (jumps of the monotonic clock) and the wall clock
/// read lag behind the monotonic one. Returns every packet published.
fn session(rate: u64, messages: u64, max_delay: Option<Duration>, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed | 1);
    let mut core = Sequencer::new(SequencerConfig { max_delay, ..SequencerConfig::new(9, 16) });
    let start = Instant(1_000_000);
    let mut pacer = Pacer::new(rate, start, Some(messages));
    let mut now = start;
    let mut out = Vec::new();
    let mut produced = 0u64;
    while produced < messages {
        // The wall clock is read after the monotonic one: mostly at once,
        // sometimes 18-30 µs later (the thread was preempted in between).
        let lag = match rng.next() % 8 {
            0 => 18_000 + rng.next() % 12_000,
            _ => rng.next() % 10,
        };
        let wall = WALL0 + now.0 + lag;
        let first = pacer.produced();
        let n = pacer.take_due(now, MAX_BATCH);
        for i in first..first + n {
            let due = pacer.due_at(i);
            core.push(due, pacer.due_wall(i, now, wall), &trade(i + 1));
        }
        produced += n;
        if n < MAX_BATCH {
            core.caught_up(now, wall);
        }
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, wall);
        }
        while let Some(p) = core.poll_packet() {
            out.push(p.to_vec());
        }
        // Wait for the next deadline, as the server does; and sometimes wake
        // late: by a few µs, or by 5 ms (the loop ran late).
        let next_due = pacer.poll_timeout();
        let next_due = match max_delay {
            None => next_due,
            Some(_) if core.pending_messages() > 0 => None,
            Some(d) => next_due.map(|t| t + d),
        };
        let deadline = [next_due, core.poll_timeout()].into_iter().flatten().min();
        let mut next = deadline.map_or(now + Duration::from_millis(1), |d| d.max(now));
        next = match rng.next() % 16 {
            0 => next + Duration::from_millis(5),
            1..=3 => next + Duration::from_nanos(rng.next() % 40_000),
            _ => next,
        };
        now = Instant(next.0.max(now.0 + 1));
    }
    let wall = WALL0 + now.0;
    core.flush(now, wall);
    while let Some(p) = core.poll_packet() {
        out.push(p.to_vec());
    }
    out
}

/// Check that message s is due at S + (s − 1)/R for every s (S: message 1's
/// due time) and that due times never decrease.
fn assert_on_schedule(rate: u64, messages: u64, packets: &[Vec<u8>], what: &str) {
    let due = due_times(packets);
    assert_eq!(due.len() as u64, messages, "{what}: every message published");
    let s0 = due[0];
    let mut off_schedule = Vec::new();
    for (k, &d) in due.iter().enumerate() {
        let want = s0 + (k as u128 * 1_000_000_000 / u128::from(rate)) as u64;
        if d != want {
            off_schedule.push((k + 1, d as i128 - want as i128));
        }
    }
    assert!(
        off_schedule.is_empty(),
        "{what}: {} of {messages} messages are off the schedule S + (s-1)/R \
         (sequence, ns late), first ones: {:?}",
        off_schedule.len(),
        &off_schedule[..off_schedule.len().min(8)]
    );
    assert!(due.windows(2).all(|w| w[0] <= w[1]), "{what}: a due time decreased");
}

#[test]
fn paced_due_times_are_the_schedule_for_every_message() {
    for (rate, messages) in [(100_000u64, 30_000u64), (250_000, 30_000), (4, 40)] {
        for max_delay in [None, Some(Duration::from_micros(300))] {
            for seed in [1u64, 7, 2026] {
                let what = format!("rate {rate}, max_delay {max_delay:?}, seed {seed}");
                let packets = session(rate, messages, max_delay, seed);
                assert_on_schedule(rate, messages, &packets, &what);
            }
        }
    }
}
