//! The suite's test packets: data of exact lengths, Logins, requests and replies tagged by subscriber.

use super::*;

/// The `index`-th data packet of a test stream, exactly `len` bytes long
/// (`HEADER_LEN <= len`): a Data header (epoch [`TEST_EPOCH`], `first_seq` =
/// `index + 1`), Quotes and Trades, and a pad message of an unknown type to
/// reach the length. CRC filled.
pub fn data_packet(index: u64, len: usize) -> Vec<u8> {
    assert!(
        len == HEADER_LEN || len >= HEADER_LEN + 4,
        "a payload is empty or at least one 4-byte message prefix"
    );
    let mut buf = vec![0u8; len];
    let payload_len = len - HEADER_LEN;
    let mut at = HEADER_LEN;
    let mut count: u16 = 0;
    let mut k = 0u64;
    loop {
        let msg = if (index + k) % 3 == 0 {
            Message::Trade(Trade {
                symbol: (index + k) as u32 % 500,
                side: if k % 2 == 0 { Side::Buy } else { Side::Sell },
                price: 1_000_000 + index as i64,
                qty: 100 + k as u32,
                exch_ts: index * 1000 + k,
                symbol_seq: 0,
            })
        } else {
            Message::Quote(Quote {
                symbol: (index + k) as u32 % 500,
                bid_px: 1_000_000 + index as i64,
                ask_px: 1_000_100 + index as i64,
                bid_qty: 10 + k as u32,
                ask_qty: 20 + k as u32,
                exch_ts: index * 1000 + k,
                symbol_seq: index + k,
            })
        };
        let mlen = tickwire_core::wire::message_len(&msg);
        if at + mlen > len || count == u16::MAX - 1 {
            break;
        }
        // Stop before a message that would leave 1..=3 bytes (too few for a pad).
        if (1..4).contains(&(len - at - mlen)) {
            break;
        }
        emit_message(&msg, &mut buf[at..]).expect("room was checked");
        at += mlen;
        count += 1;
        k += 1;
    }
    let pad = len - at;
    if pad > 0 {
        // pad >= 4 by construction, and < 2^16 since a packet is at most 64 KiB.
        buf[at] = PAD_TYPE;
        buf[at + 1] = 0;
        buf[at + 2..at + 4].copy_from_slice(&(pad as u16).to_le_bytes());
        for (j, b) in buf[at + 4..].iter_mut().enumerate() {
            *b = (index as usize).wrapping_mul(31).wrapping_add(j) as u8;
        }
        count += 1;
    }
    let repr = PacketRepr {
        kind: PacketKind::Data,
        flags: 0,
        epoch: TEST_EPOCH,
        first_seq: SeqNo(index + 1),
        count,
        send_time: index,
        payload_len,
    };
    let mut p = Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p);
    p.fill_crc();
    buf
}

/// `n` data packets of mixed sizes between the header alone and `max_len`
/// (both ends included; `max_len >= HEADER_LEN + 4`), deterministic for `seed`.
pub fn test_stream(seed: u64, n: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let fixed = [HEADER_LEN, max_len, HEADER_LEN + 4, max_len - 1, HEADER_LEN + 48];
    (0..n)
        .map(|i| {
            let mut len = if i < fixed.len() {
                fixed[i].clamp(HEADER_LEN, max_len)
            } else if rng.random::<bool>() {
                rng.random_range(HEADER_LEN..=(HEADER_LEN + 200).min(max_len))
            } else {
                rng.random_range(HEADER_LEN..=max_len)
            };
            if (1..4).contains(&(len - HEADER_LEN)) {
                // No message fits 1..=3 bytes of payload.
                len = HEADER_LEN + 4;
            }
            data_packet(i as u64, len)
        })
        .collect()
}

/// A header-only packet.
pub(super) fn bare(kind: PacketKind, first_seq: u64, count: u16) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    PacketRepr {
        kind,
        flags: 0,
        epoch: TEST_EPOCH,
        first_seq: SeqNo(first_seq),
        count,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut b);
    b
}

/// Subscriber `sub`'s Login.
pub(super) fn login(sub: usize) -> Vec<u8> {
    bare(PacketKind::Login, sub as u64, 0)
}

/// The answer to subscriber `sub`'s Login.
pub(super) fn login_ack(sub: usize) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + LoginAck::<&[u8]>::LEN];
    let repr = PacketRepr {
        kind: PacketKind::LoginAck,
        flags: 0,
        epoch: TEST_EPOCH,
        first_seq: SeqNo(sub as u64),
        count: 0,
        send_time: 0,
        payload_len: LoginAck::<&[u8]>::LEN,
    };
    let mut p = Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p);
    LoginAck::new_unchecked(p.payload_mut())
        .emit(&LoginAckRepr { oldest: SeqNo::FIRST, mode: LoginMode::Resume });
    p.fill_crc();
    buf
}

/// Tag of request `j` of subscriber `sub`.
pub(super) fn tag(sub: usize, j: usize) -> u64 {
    ((sub as u64) << 32) | j as u64
}

/// The `(sub, j)` a request or reply was made for: a NACK carries its tag in
/// `first_seq`, packets built by [`data_packet`] the tag plus one.
pub(super) fn untag(bytes: &[u8]) -> Option<(usize, usize)> {
    let v = Packet::new_checked(bytes).ok()?;
    let t = match v.kind() {
        PacketKind::Nack => v.first_seq().0,
        _ => v.first_seq().0.checked_sub(1)?,
    };
    Some(((t >> 32) as usize, (t & 0xffff_ffff) as usize))
}

/// Request `j` of subscriber `sub`: a NACK, or (one in three) a snapshot
/// request carrying a pad payload, so requests of several sizes are framed.
pub(super) fn request(sub: usize, j: usize) -> Vec<u8> {
    if j % 3 == 2 {
        let mut p = data_packet(tag(sub, j), HEADER_LEN + 100);
        let mut v = Packet::new_unchecked(&mut p[..]);
        v.set_kind(PacketKind::SnapshotRequest);
        v.fill_crc();
        p
    } else {
        bare(PacketKind::Nack, tag(sub, j), (j % 100) as u16 + 1)
    }
}

/// The reply to request `j` of subscriber `sub`: a Retransmission whose
/// size depends on `j`.
pub(super) fn reply(sub: usize, j: usize, max_len: usize) -> Vec<u8> {
    let len = (HEADER_LEN + 48 * (j % 20)).min(max_len);
    let mut p = data_packet(tag(sub, j), len);
    let mut v = Packet::new_unchecked(&mut p[..]);
    v.set_kind(PacketKind::Retransmission);
    v.fill_crc();
    p
}
