//! A TCP Login's catch-up, streamed: the replay a Login asks for is framed
//! from the [`RetransmitStore`] a packet at a time, as the connection drains,
//! instead of being copied whole into the connection's queue.
//!
//! A Login from sequence 1 asks for the whole retransmit window (2^20
//! messages ≈ 60 MB by default). [`crate::publisher::Sequencer::handle_request`]
//! answers a Login at once, through its reply callback; a server that must keep
//! the memory of each connection bounded answers resume Logins with this
//! module instead: [`plan_login`] decides what the Login gets (exactly as the
//! publisher would), [`emit_login_ack`] writes the LoginAck, and a [`CatchUp`]
//! cursor frames the Retransmissions on demand (`poll_transmit`), following
//! the live stream as it grows until it reaches
//! [`RetransmitStore::next`]: then the connection turns live. The bytes on the
//! wire are those `handle_request` would have sent (a test compares them).
//!
//! Sans-IO: no clock, no socket; the caller passes the store, the send time
//! and the buffer.
//!
//! ```
//! use tickwire_core::catchup::{CatchUp, LoginPlan, emit_login_ack, plan_login};
//! use tickwire_core::publisher::{Sequencer, SequencerConfig};
//! use tickwire_core::wire::{PacketKind, PacketRepr};
//! use tickwire_core::{Instant, Message, SeqNo, Side, Trade};
//!
//! let mut p = Sequencer::new(SequencerConfig::new(7, 16));
//! for i in 0..100 {
//!     p.push(Instant(0), 0, &Message::Trade(Trade { symbol: 1, side: Side::Buy, price: i, qty: 1, exch_ts: 0, symbol_seq: 0 }));
//! }
//! p.flush(Instant(0), 0);
//! while p.poll_packet().is_some() {}
//! let login = PacketRepr { kind: PacketKind::Login, flags: 0, epoch: 0, first_seq: SeqNo(1),
//!                          count: 0, send_time: 0, payload_len: 0 };
//! let LoginPlan::Resume { from } = plan_login(7, p.store(), &login) else { unreachable!() };
//! let mut buf = vec![0u8; 1472];
//! let ack_len = emit_login_ack(&mut buf, 7, 42, from, p.store().oldest());
//! assert_eq!(ack_len, 56);
//! let mut cursor = CatchUp::new(from);
//! let mut messages = 0;
//! while let Some(n) = cursor.poll_transmit(p.store(), 7, 42, &mut buf).unwrap() {
//!     messages += tickwire_core::wire::Packet::new_checked(&buf[..n]).unwrap().count();
//! }
//! assert_eq!(messages, 100);
//! assert!(cursor.is_done(p.store()));
//! ```

use crate::publisher::RetransmitStore;
use crate::publisher::replies;
use crate::seq::SeqNo;
use crate::wire::{HEADER_LEN, LoginAck, LoginAckRepr, LoginMode, PacketRepr};

/// Bytes of a LoginAck packet (header + body).
pub const LOGIN_ACK_LEN: usize = HEADER_LEN + LoginAck::<&[u8]>::LEN;

/// What a Login gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginPlan {
    /// A LoginAck in resume mode, then every message from `from` on.
    Resume {
        /// The first sequence replayed.
        from: SeqNo,
    },
    /// A LoginAck in snapshot mode and a snapshot (bounded by the number of
    /// symbols): hand the Login to the publisher's `handle_request`.
    Snapshot,
}

/// The plan for `login` (a parsed Login packet) at a publisher of `epoch`
/// whose store is `store`; the same rule as the publisher's own Login
/// service: resume when the Login names this session's epoch and a sequence
/// inside the window (or epoch 0 and sequence 1 while sequence 1 is still
/// held), else a snapshot.
pub fn plan_login(epoch: u64, store: &RetransmitStore, login: &PacketRepr) -> LoginPlan {
    let requested = SeqNo(login.first_seq.0.max(SeqNo::FIRST.0));
    let (oldest, next) = (store.oldest(), store.next());
    let same_session = login.epoch == epoch && requested >= oldest && requested <= next;
    let fresh_from_start = login.epoch == 0 && requested == SeqNo::FIRST && oldest == SeqNo::FIRST;
    if same_session || fresh_from_start {
        LoginPlan::Resume { from: requested }
    } else {
        LoginPlan::Snapshot
    }
}

/// Write a resume-mode LoginAck (resuming at `from`, `oldest` the oldest
/// sequence held) into `buf`, which needs [`LOGIN_ACK_LEN`] bytes; returns its
/// length.
pub fn emit_login_ack(
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    from: SeqNo,
    oldest: SeqNo,
) -> usize {
    replies::emit_login_ack(
        buf,
        epoch,
        wall_ns,
        from,
        LoginAckRepr { oldest, mode: LoginMode::Resume },
    )
}

/// The catch-up fell out of the retransmit window: the messages it still had
/// to send were overwritten (the connection drained more slowly than the feed
/// advanced). The connection cannot be continued: close it; the client
/// reconnects and gets a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("catch-up at sequence {at} fell out of the retransmit window (oldest held {oldest})")]
pub struct Overrun {
    /// The next sequence the catch-up had to send.
    pub at: SeqNo,
    /// The oldest sequence the store still holds.
    pub oldest: SeqNo,
}

/// A cursor over the messages a connection still has to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUp {
    next: SeqNo,
}

impl CatchUp {
    /// A catch-up starting at `from`.
    pub fn new(from: SeqNo) -> CatchUp {
        CatchUp { next: from }
    }

    /// The next sequence to send.
    pub fn next(&self) -> SeqNo {
        self.next
    }

    /// Everything published has been sent: the connection can turn live
    /// (provided every sealed packet was handed to the transport first, so
    /// the live stream continues exactly at [`RetransmitStore::next`]).
    pub fn is_done(&self, store: &RetransmitStore) -> bool {
        self.next >= store.next()
    }

    /// The messages still to send have left the window (checked without
    /// framing anything: a connection that does not drain is found out too).
    pub fn overrun(&self, store: &RetransmitStore) -> Option<Overrun> {
        (self.next < store.next() && self.next < store.oldest())
            .then(|| Overrun { at: self.next, oldest: store.oldest() })
    }

    /// Frame the next Retransmission packet (as many messages as fit in
    /// `buf`) into `buf`; returns its length, `Ok(None)` when caught up, or
    /// [`Overrun`] when the messages are no longer held. `buf` must hold a
    /// header and one message (the publisher's `max_packet_len` does).
    pub fn poll_transmit(
        &mut self,
        store: &RetransmitStore,
        epoch: u64,
        wall_ns: u64,
        buf: &mut [u8],
    ) -> Result<Option<usize>, Overrun> {
        let to = store.next();
        if self.next >= to {
            return Ok(None);
        }
        if let Some(o) = self.overrun(store) {
            return Err(o);
        }
        let framed =
            replies::frame_retransmission(store, buf, epoch, wall_ns, (self.next, to), usize::MAX);
        // None: the buffer cannot hold one message, a caller bug, reported
        // as caught up rather than looping.
        Ok(framed.map(|(next, len)| {
            self.next = next;
            len
        }))
    }
}
