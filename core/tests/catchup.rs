//! The streamed catch-up sends exactly what the publisher's own Login service
//! sends (LoginAck and Retransmissions, byte for byte), whatever the Login and
//! however far the window has wrapped; and it reports an overrun instead of
//! sending a gap.

use tickwire_core::catchup::{CatchUp, LoginPlan, Overrun, emit_login_ack, plan_login};
use tickwire_core::publisher::{RequestOutcome, Sequencer, SequencerConfig};
use tickwire_core::wire::{HEADER_LEN, LoginMode, PacketKind, PacketRepr};
use tickwire_core::{Instant, Message, Quote, SeqNo, Side, Trade};

const EPOCH: u64 = 77;
const WALL: u64 = 1_234_567;

fn publisher(window: u64, messages: u64) -> Sequencer {
    let mut p = Sequencer::new(SequencerConfig {
        retransmit_window: window,
        ..SequencerConfig::new(EPOCH, 8)
    });
    for i in 0..messages {
        // Mixed sizes, so packets break at different message counts.
        let m = if i % 3 == 0 {
            Message::Trade(Trade {
                symbol: (i % 8) as u32,
                side: Side::Buy,
                price: i as i64,
                qty: 1,
                exch_ts: i,
                symbol_seq: 0,
            })
        } else {
            Message::Quote(Quote {
                symbol: (i % 8) as u32,
                bid_px: i as i64,
                ask_px: i as i64 + 1,
                bid_qty: 1,
                ask_qty: 2,
                exch_ts: i,
                symbol_seq: i,
            })
        };
        p.push(Instant(i), i, &m);
    }
    p.flush(Instant(messages), 0);
    while p.poll_packet().is_some() {}
    p
}

fn login(epoch: u64, from: u64) -> PacketRepr {
    PacketRepr {
        kind: PacketKind::Login,
        flags: 0,
        epoch,
        first_seq: SeqNo(from),
        count: 0,
        send_time: 0,
        payload_len: 0,
    }
}

fn bytes(r: &PacketRepr) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    r.emit_bare(&mut b);
    b
}

fn streamed(p: &Sequencer, plan: LoginPlan) -> Vec<Vec<u8>> {
    let LoginPlan::Resume { from } = plan else { panic!("not a resume") };
    let mut buf = vec![0u8; p.config().max_packet_len];
    let mut out = Vec::new();
    let n = emit_login_ack(&mut buf, EPOCH, WALL, from, p.store().oldest());
    out.push(buf[..n].to_vec());
    // The Status naming the server instance follows every LoginAck.
    let n = p.login_status(&mut buf, WALL);
    out.push(buf[..n].to_vec());
    let mut c = CatchUp::new(from);
    while let Some(n) = c.poll_transmit(p.store(), EPOCH, WALL, &mut buf).unwrap() {
        out.push(buf[..n].to_vec());
    }
    assert!(c.is_done(p.store()));
    out
}

#[test]
fn streamed_catch_up_is_byte_for_byte_the_publishers() {
    for (window, messages) in [(1 << 12, 1000u64), (256, 1000), (1000, 1000), (64, 0)] {
        let oldest = messages.saturating_sub(window).max(1);
        let next = messages + 1;
        let cases = [
            (0, 1),
            (EPOCH, 1),
            (EPOCH, oldest),
            (EPOCH, oldest + 7),
            (EPOCH, next),
            (EPOCH, next + 1),
            (EPOCH, oldest.saturating_sub(1)),
            (EPOCH + 1, oldest),
            (0, 5),
        ];
        for (epoch, from) in cases {
            let who =
                format!("window {window}, {messages} messages, login epoch {epoch} from {from}");
            let mut p = publisher(window, messages);
            let l = login(epoch, from);
            let plan = plan_login(EPOCH, p.store(), &l);
            let mut want = Vec::new();
            let out = p.handle_request(Instant(1 << 40), WALL, 9, &bytes(&l), &mut |r| {
                want.push(r.to_vec())
            });
            match out {
                RequestOutcome::LoginAccepted { mode: LoginMode::Resume, resume_from } => {
                    assert_eq!(plan, LoginPlan::Resume { from: resume_from }, "{who}");
                    assert_eq!(streamed(&p, plan), want, "{who}");
                }
                RequestOutcome::LoginAccepted { mode: LoginMode::Snapshot, .. } => {
                    assert_eq!(plan, LoginPlan::Snapshot, "{who}");
                }
                other => panic!("{who}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_catch_up_overtaken_by_the_window_stops_with_an_overrun() {
    let mut p = publisher(256, 200);
    let mut c = CatchUp::new(SeqNo(1));
    let mut buf = vec![0u8; 1472];
    assert!(c.poll_transmit(p.store(), EPOCH, WALL, &mut buf).unwrap().is_some());
    let at = c.next();
    // The feed goes on while the connection does not drain.
    for i in 0..1000 {
        p.push(
            Instant(i),
            0,
            &Message::Trade(Trade {
                symbol: 0,
                side: Side::Sell,
                price: 1,
                qty: 1,
                exch_ts: 0,
                symbol_seq: 0,
            }),
        );
    }
    p.flush(Instant(2000), 0);
    while p.poll_packet().is_some() {}
    assert_eq!(c.overrun(p.store()), Some(Overrun { at, oldest: p.store().oldest() }));
    assert_eq!(
        c.poll_transmit(p.store(), EPOCH, WALL, &mut buf),
        Err(Overrun { at, oldest: p.store().oldest() })
    );
}

#[test]
fn a_catch_up_follows_the_live_stream_until_it_reaches_it() {
    let mut p = publisher(1 << 12, 100);
    let mut c = CatchUp::new(SeqNo(1));
    let mut buf = vec![0u8; 1472];
    while c.poll_transmit(p.store(), EPOCH, WALL, &mut buf).unwrap().is_some() {}
    assert!(c.is_done(p.store()));
    p.push(
        Instant(0),
        0,
        &Message::Trade(Trade {
            symbol: 0,
            side: Side::Sell,
            price: 1,
            qty: 1,
            exch_ts: 0,
            symbol_seq: 0,
        }),
    );
    p.flush(Instant(1), 0);
    assert!(!c.is_done(p.store()), "more was published");
    let n = c.poll_transmit(p.store(), EPOCH, WALL, &mut buf).unwrap().unwrap();
    assert_eq!(n, HEADER_LEN + 32);
    assert_eq!(c.next(), SeqNo(102));
    // A buffer too small for one message is no loop.
    p.push(
        Instant(0),
        0,
        &Message::Trade(Trade {
            symbol: 0,
            side: Side::Sell,
            price: 1,
            qty: 1,
            exch_ts: 0,
            symbol_seq: 0,
        }),
    );
    p.flush(Instant(1), 0);
    assert_eq!(c.poll_transmit(p.store(), EPOCH, WALL, &mut buf[..HEADER_LEN + 10]), Ok(None));
}
