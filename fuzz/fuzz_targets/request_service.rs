//! The publisher's request service (Nack, SnapshotRequest, Login) under
//! arbitrary requests from arbitrary peers at arbitrary times. Every reply
//! must be a valid packet (header, CRC) no longer than `max_packet_len`.
#![no_main]

use std::time::Duration;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tickwire_core::publisher::{RequestLimits, Sequencer, SequencerConfig, peer_host};
use tickwire_core::wire::{FLAG_COOKIE, HEADER_LEN, Packet, PacketKind, PacketRepr};
use tickwire_core::{Instant, Message, Quote, SeqNo, Side, Trade};
use tickwire_fuzz::{EPOCH, EPOCH2, finish};

const SYMBOLS: u32 = 64;
const MAX_PACKET: usize = 512;

fn msg(n: u64) -> Message {
    let symbol = (n.wrapping_mul(7) % u64::from(SYMBOLS)) as u32;
    if n.is_multiple_of(3) {
        Message::Trade(Trade {
            symbol,
            side: Side::Buy,
            price: n as i64,
            qty: 1,
            exch_ts: n,
            symbol_seq: 0,
        })
    } else {
        Message::Quote(Quote {
            symbol,
            bid_px: n as i64,
            ask_px: n as i64 + 1,
            bid_qty: 1,
            ask_qty: 2,
            exch_ts: n,
            symbol_seq: n,
        })
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let published = u64::from(u.int_in_range(0u8..=200)?);
    let cfg = SequencerConfig {
        retransmit_window: 32,
        max_packet_len: MAX_PACKET,
        serve_logins: u.ratio(7, 8)?,
        limits: RequestLimits::default(),
        ..SequencerConfig::new(EPOCH, SYMBOLS)
    };
    let mut p = Sequencer::new(cfg);
    let mut now = 1_000u64;
    for i in 1..=published {
        p.push(Instant(now + i), now + i, &msg(i));
        if i % 17 == 0 {
            p.flush(Instant(now + i), now + i);
        }
    }
    now += published + 1;
    p.flush(Instant(now), now);
    if u.ratio(1, 8)? {
        p.end_session(Instant(now), now);
    }
    while p.poll_packet().is_some() {}
    let next = p.next_seq().0;

    let mut req = [0u8; HEADER_LEN];
    while !u.is_empty() {
        now = now.saturating_add(match u.int_in_range(0u8..=3)? {
            0 => 0,
            1 => u64::from(u.arbitrary::<u16>()?),
            2 => u64::from(u.arbitrary::<u32>()?),
            _ => Duration::from_millis(u64::from(u.arbitrary::<u8>()?)).as_nanos() as u64,
        });
        // Four hosts, two ports each (datagram peer ids: host << 16 | port).
        let peer =
            (u64::from(u.int_in_range(0u8..=3)?) << 16) | u64::from(u.int_in_range(7u8..=8)?);
        let bytes: Vec<u8> = match u.int_in_range(0u8..=7)? {
            0 => {
                let n = u.arbitrary_len::<u8>()?.min(2048);
                u.bytes(n)?.to_vec()
            }
            1 => {
                if u.ratio(1, 16)? {
                    p.handle_timeout(Instant(now), now);
                    while p.poll_packet().is_some() {}
                }
                if u.arbitrary()? {
                    p.forget_peer(peer);
                }
                continue;
            }
            _ => {
                let kind = match u.int_in_range(0u8..=10)? {
                    0..=3 => PacketKind::Nack,
                    4..=5 => PacketKind::SnapshotRequest,
                    6 => PacketKind::Login,
                    7 => PacketKind::Probe,
                    8 => PacketKind::Data,
                    _ => PacketKind::from_byte(u.arbitrary()?),
                };
                let epoch = match u.int_in_range(0u8..=7)? {
                    0 => 0,
                    1 => EPOCH2,
                    2 => u.arbitrary()?,
                    _ => EPOCH,
                };
                let first_seq = match u.int_in_range(0u8..=5)? {
                    0 => u.arbitrary()?,
                    1 => 0,
                    _ => next.saturating_add_signed(i64::from(u.arbitrary::<i8>()?)),
                };
                let count = if u.ratio(1, 4)? {
                    u.arbitrary()?
                } else {
                    u16::from(u.arbitrary::<u8>()? % 40)
                };
                let repr = PacketRepr {
                    kind,
                    flags: if u.ratio(1, 8)? { u.arbitrary()? } else { 0 },
                    epoch,
                    first_seq: SeqNo(first_seq),
                    count,
                    send_time: now,
                    payload_len: 0,
                };
                // Requests usually carry their token: a Probe's nonce, the
                // host's cookie (sometimes a wrong one).
                let token = match kind {
                    PacketKind::Probe => Some(u.arbitrary::<u64>()?),
                    PacketKind::Nack | PacketKind::SnapshotRequest if u.ratio(3, 4)? => {
                        Some(if u.ratio(7, 8)? {
                            p.cookie(peer_host(peer))
                        } else {
                            u.arbitrary()?
                        })
                    }
                    _ => None,
                };
                if let Some(t) = token {
                    let repr = PacketRepr {
                        flags: repr.flags | if kind == PacketKind::Probe { 0 } else { FLAG_COOKIE },
                        ..repr
                    };
                    finish(&repr, &t.to_le_bytes())
                } else if u.ratio(1, 8)? {
                    let n = usize::from(u.arbitrary::<u8>()?);
                    finish(&repr, u.bytes(n)?)
                } else {
                    let n = repr.emit_bare(&mut req);
                    req[..n].to_vec()
                }
            }
        };
        let mut replies = 0usize;
        p.handle_request(Instant(now), now, peer, &bytes, &mut |reply: &[u8]| {
            replies += 1;
            assert!(reply.len() <= MAX_PACKET, "reply of {} bytes", reply.len());
            let pkt = Packet::new_checked(reply).expect("reply is framed");
            assert_eq!(pkt.total_len(), reply.len(), "reply has no trailing bytes");
            let r = PacketRepr::parse(&pkt).expect("reply CRC");
            assert_eq!(r.epoch, EPOCH);
        });
        let _ = replies;
        // Live output interleaved with requests, as a server does.
        if u.ratio(1, 8)? {
            let n = p.next_seq().0;
            p.push(Instant(now), now, &msg(n));
            p.flush(Instant(now), now);
        }
        while let Some(b) = p.poll_packet() {
            assert!(b.len() <= MAX_PACKET);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
