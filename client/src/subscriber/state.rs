//! What the loop does with the receiver's events: cache, verification,
//! the caller's callback, latency.

use tickwire_core::cache::{CacheWriter, Freshness};
use tickwire_core::latency::{Latency, Run, TickToCache};
use tickwire_core::recovery::{Event, Receiver};
use tickwire_core::{SeqNo, SymbolId};

use super::wall_ns;
use crate::verify::Verifier;

/// Everything the event handler touches; separate from the transport so the
/// transport's poll callback can borrow it.
#[derive(Debug)]
pub(super) struct State {
    pub(super) receiver: Receiver,
    pub(super) writer: CacheWriter,
    pub(super) latency: Latency,
    pub(super) timing: TickToCache,
    /// (due, send time) of the messages applied in the current drain (reused).
    pub(super) applied: Vec<(u64, u64)>,
    pub(super) verifier: Option<Verifier>,
    pub(super) filter: Option<Vec<bool>>,
    pub(super) activity: Vec<u64>,
    pub(super) end: Option<SeqNo>,
    pub(super) reconnect_due: bool,
    /// Wall clock (ns since the Unix epoch) when the receiver's clock was 0:
    /// turns its instants into wall times for the cache.
    pub(super) wall_at_start: u64,
}

/// The stamps of the packet being handled (T1 sent, T2 kernel rx, T3 app rx).
#[derive(Clone, Copy, Debug)]
pub(super) struct PacketStamps {
    pub(super) send_time: u64,
    pub(super) kernel_rx: Option<u64>,
    pub(super) app_rx: u64,
}

/// Whether `symbol` passes the subscription `filter` (None: every symbol).
fn subscribed(filter: &Option<Vec<bool>>, symbol: Option<SymbolId>) -> bool {
    match (filter, symbol) {
        (None, _) => true,
        (Some(f), Some(s)) => f.get(s as usize).copied().unwrap_or(false),
        (Some(_), None) => false,
    }
}

impl State {
    /// Apply every event the receiver has, handing each to `on_event`;
    /// `packet` names the packet just handed to it (None: events after a
    /// timer). Latencies are recorded once the messages are in the cache: one
    /// clock read per drain, not per message.
    pub(super) fn drain_events<F: FnMut(&Event)>(
        &mut self,
        packet: Option<PacketStamps>,
        on_event: &mut F,
    ) {
        self.applied.clear();
        let (filter, writer, verifier) = (&self.filter, &mut self.writer, &mut self.verifier);
        let (applied, activity) = (&mut self.applied, &mut self.activity);
        let (end, reconnect_due, wall_at_start) =
            (&mut self.end, &mut self.reconnect_due, self.wall_at_start);
        self.receiver.drain_events(|ev| {
            match ev {
                Event::Message { seq, msg, send_time, due_time, .. } => {
                    if *due_time != 0 {
                        applied.push((*due_time, *send_time));
                    }
                    if let Some(v) = verifier {
                        v.message(*seq, msg);
                    }
                    if !subscribed(filter, msg.symbol()) {
                        return;
                    }
                    writer.apply(seq.0, msg);
                    if let Some(a) = msg.symbol().and_then(|s| activity.get_mut(s as usize)) {
                        *a += 1;
                    }
                }
                Event::SnapshotStart { seq, .. } => {
                    if let Some(v) = verifier {
                        v.snapshot_start(*seq);
                    }
                }
                Event::SymbolState(s) => {
                    if let Some(v) = verifier {
                        v.snapshot_record(s);
                    }
                    writer.set(s);
                    if !subscribed(filter, Some(s.symbol)) {
                        return;
                    }
                }
                Event::SnapshotEnd { .. } | Event::EpochChanged { old: None, .. } => {}
                Event::EpochChanged { old: Some(old), new } => {
                    if old == new {
                        eprintln!("client: server restarted (new instance, same epoch {new})");
                    } else {
                        eprintln!(
                            "client: session epoch changed {old} -> {new}: the server restarted"
                        );
                    }
                    // The new session's book starts empty: nothing of the old
                    // one may stay in the cache (a snapshot would overwrite
                    // every symbol, a resume from 1 would not).
                    writer.clear();
                    if let Some(v) = verifier
                        && let Err(e) = v.restart()
                    {
                        eprintln!("client: verifier: {e}");
                    }
                    *end = None;
                }
                Event::Reconnect => {
                    *reconnect_due = true;
                    return;
                }
                Event::EndOfSession { next } => {
                    if let Some(v) = verifier {
                        v.end_of_session(*next);
                    }
                    *end = Some(*next);
                }
                Event::Unrecoverable { range } => {
                    if let Some(v) = verifier {
                        v.given_up(*range);
                    }
                    eprintln!("client: gave up on {range}");
                }
                Event::SymbolStale { symbol, since, reason } => {
                    let since_ns = wall_at_start + since.as_nanos();
                    writer.set_freshness(*symbol, Freshness::Stale { since_ns, reason: *reason });
                }
                Event::SymbolFresh { symbol, .. } => {
                    writer.set_freshness(*symbol, Freshness::Fresh);
                }
            }
            on_event(ev);
        });
        if !self.applied.is_empty() {
            self.record_latencies(packet, wall_ns());
        }
    }

    /// Record the latencies of the messages applied by this drain, all in the
    /// cache at `applied` (T4).
    fn record_latencies(&mut self, packet: Option<PacketStamps>, applied: u64) {
        let t = &mut self.timing;
        let mut from_packet = 0u64;
        let (mut total, mut queued) = (Run::default(), Run::default());
        for &(due, sent) in &self.applied {
            t.tick_to_cache.record_between_in(&mut total, due, applied);
            t.due_to_sent.record_between_in(&mut queued, due, sent);
            from_packet += u64::from(packet.is_some_and(|p| p.send_time == sent));
        }
        t.tick_to_cache.end_run(&mut total);
        t.due_to_sent.end_run(&mut queued);
        // The messages of the packet just handled share its stamps.
        if let Some(p) = packet.filter(|_| from_packet > 0) {
            self.latency.record_between_n(p.send_time, p.app_rx, from_packet);
            if let Some(k) = p.kernel_rx {
                t.sent_to_kernel.record_between_n(p.send_time, k, from_packet);
                t.kernel_to_app.record_between_n(k, p.app_rx, from_packet);
            }
            t.received_to_applied.record_between_n(p.app_rx, applied, from_packet);
        }
    }
}
