//! Encoding the service's replies: Retransmission, Snapshot, NackReject, LoginAck, Status.

use super::store::RetransmitStore;
use super::{RECORD_LEN, SNAPSHOT_HEADER_LEN, snapshot_parts};
use crate::msg::SymbolState;
use crate::seq::SeqNo;
use crate::wire::{
    HEADER_LEN, LoginAck, LoginAckRepr, NackReject, NackRejectRepr, PacketKind, PacketRepr,
    SnapshotHeader, Status, StatusRepr, emit_record,
};

/// What a reply run sent.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sent {
    pub(super) packets: u64,
    pub(super) bytes: usize,
}

/// Bytes of a NackReject packet (header + 16-byte body).
pub(super) const NACK_REJECT_LEN: usize = HEADER_LEN + NackReject::<&[u8]>::LEN;
pub(super) use crate::catchup::LOGIN_ACK_LEN;
/// Bytes of a Status packet (header + 32-byte body).
pub(super) const STATUS_LEN: usize = HEADER_LEN + Status::<&[u8]>::LEN;

/// Write a header into `buf[..HEADER_LEN]` for a packet whose payload is
/// already in place, and fill its CRC. Returns the packet length.
pub(crate) fn seal_reply(
    buf: &mut [u8],
    kind: PacketKind,
    epoch: u64,
    first_seq: SeqNo,
    count: u16,
    wall_ns: u64,
    payload_len: usize,
) -> usize {
    PacketRepr { kind, flags: 0, epoch, first_seq, count, send_time: wall_ns, payload_len }
        .seal(buf)
}

/// Frame the stored messages from `first` (up to `to`, at most `limit`
/// bytes and `buf.len()`) into one Retransmission packet in `buf`. Returns
/// one past the last message framed and the packet's length, or `None` when
/// not one message fits (or none is stored at `first`).
pub(crate) fn frame_retransmission(
    store: &RetransmitStore,
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    (first, to): (SeqNo, SeqNo),
    limit: usize,
) -> Option<(SeqNo, usize)> {
    let mut s = first;
    let mut off = HEADER_LEN;
    while s < to {
        let Some(m) = store.get(s) else { break };
        let end = off + m.len();
        if end > buf.len() || end > limit {
            break;
        }
        buf[off..end].copy_from_slice(m);
        off = end;
        s = s.next();
    }
    if s == first {
        return None;
    }
    // At most (65536 - 40) / 32 messages per packet: always a u16.
    let count = (s.0 - first.0) as u16;
    let len =
        seal_reply(buf, PacketKind::Retransmission, epoch, first, count, wall_ns, off - HEADER_LEN);
    Some((s, len))
}

/// Frame the stored messages `[from, to)` into Retransmission packets of at
/// most `buf.len()` bytes, stopping before the total would exceed `budget`.
/// Returns one past the last message sent, and what was sent.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_retransmission(
    store: &RetransmitStore,
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    from: SeqNo,
    to: SeqNo,
    budget: usize,
    reply: &mut dyn FnMut(&[u8]),
) -> (SeqNo, Sent) {
    let mut sent = Sent::default();
    let mut s = from;
    while s < to {
        let limit = budget.saturating_sub(sent.bytes);
        let Some((next, len)) = frame_retransmission(store, buf, epoch, wall_ns, (s, to), limit)
        else {
            break;
        };
        s = next;
        reply(&buf[..len]);
        sent.packets += 1;
        sent.bytes += len;
    }
    (s, sent)
}

/// Send the whole book as Snapshot parts consistent at `at`.
pub(super) fn emit_snapshot(
    states: &[SymbolState],
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    at: SeqNo,
    reply: &mut dyn FnMut(&[u8]),
) -> Sent {
    let per = super::records_per_part(buf.len());
    let parts = snapshot_parts(states.len(), buf.len());
    // The configuration check bounds `parts` to u16 and `symbols` to u32.
    let (parts16, symbols) = (parts as u16, states.len() as u32);
    let mut sent = Sent::default();
    for part in 0..parts {
        let chunk = &states[(part * per).min(states.len())..((part + 1) * per).min(states.len())];
        let mut off = HEADER_LEN;
        SnapshotHeader::new_unchecked(&mut buf[off..off + SNAPSHOT_HEADER_LEN]).emit(
            part as u16,
            parts16,
            symbols,
        );
        off += SNAPSHOT_HEADER_LEN;
        for st in chunk {
            emit_record(st, &mut buf[off..off + RECORD_LEN]);
            off += RECORD_LEN;
        }
        let len = seal_reply(
            buf,
            PacketKind::Snapshot,
            epoch,
            at,
            chunk.len() as u16,
            wall_ns,
            off - HEADER_LEN,
        );
        reply(&buf[..len]);
        sent.packets += 1;
        sent.bytes += len;
    }
    sent
}

pub(super) fn emit_nack_reject(
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    nack: &PacketRepr,
    body: NackRejectRepr,
) -> usize {
    NackReject::new_unchecked(&mut buf[HEADER_LEN..NACK_REJECT_LEN]).emit(&body);
    seal_reply(
        buf,
        PacketKind::NackReject,
        epoch,
        nack.first_seq,
        nack.count,
        wall_ns,
        NACK_REJECT_LEN - HEADER_LEN,
    )
}

/// A LoginAck packet (`first_seq` where the stream resumes) with `body`.
pub(crate) fn emit_login_ack(
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    first_seq: SeqNo,
    body: LoginAckRepr,
) -> usize {
    LoginAck::new_unchecked(&mut buf[HEADER_LEN..LOGIN_ACK_LEN]).emit(&body);
    seal_reply(buf, PacketKind::LoginAck, epoch, first_seq, 0, wall_ns, LOGIN_ACK_LEN - HEADER_LEN)
}

/// A Status packet (`first_seq` the server's next sequence) with `body`;
/// `buf` needs [`STATUS_LEN`] bytes.
pub(crate) fn emit_status(
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    next: SeqNo,
    body: &StatusRepr,
) -> usize {
    Status::new_unchecked(&mut buf[HEADER_LEN..STATUS_LEN]).emit(body);
    seal_reply(buf, PacketKind::Status, epoch, next, 0, wall_ns, STATUS_LEN - HEADER_LEN)
}
