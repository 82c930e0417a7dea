//! Replay a recorded session: a [`MessageSource`] made from a pcapng capture
//! (`client --record`, or tcpdump/Wireshark on the feed's interface).
//!
//! [`Replay::open`] reads the whole capture once and rebuilds the message
//! stream of its session in sequence order:
//!
//! * every UDP datagram that is a Tickwire packet with a valid CRC is read;
//!   other datagrams and other frames are counted and skipped
//!   ([`ReplayReport::foreign`], [`ReplayReport::bad`]);
//! * the messages of `Data` and `Retransmission` packets of the capture's
//!   first session (the first epoch that carried messages; packets of later
//!   epochs are counted in [`ReplayReport::other_epochs`]) are kept by
//!   sequence, the first copy of each: line A/B duplicates and
//!   retransmissions of what had already arrived are dropped
//!   ([`ReplayReport::duplicates`]);
//! * each message is kept as it was recorded, the symbol's update number
//!   included (a Quote's `symbol_seq`, a Trade's low 32 bits or its 0, "not
//!   carried", docs/PROTOCOL.md § 4.2): the replay renumbers the sequence,
//!   never a symbol's updates;
//! * snapshots, heartbeats and control packets carry no message and are not
//!   replayed: the replaying server makes its own;
//! * each message's pace is its due time from the `Data` packet's timing
//!   block, or the packet's receive stamp where there is none; a message the
//!   capture holds only from a `Retransmission` is due with the message
//!   before it. Due times never go backwards.
//!
//! The replay is a **new session**: its own epoch, sequences from 1, the
//! capture's messages back to back in their sequence order. A capture that
//! holds every message from 1 replays the original stream exactly (so a
//! client's `--verify SEED` passes against the seed of the recorded
//! server). One that lacks some — a hole never recovered, or a head it never
//! saw (a subscriber that joined late, from a snapshot) — replays what it
//! holds, from its lowest sequence, and [`ReplayReport::missing`] says how
//! many messages of the recorded range `1 ..= last` it lacked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tickwire_core::Message;
use tickwire_core::wire::{MessageIter, Packet, PacketKind, SnapshotHeader};
use tickwire_transports::pcap::CaptureReader;

use crate::MessageSource;

/// How fast a replay runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the transport takes the messages (the server's `--rate 0`).
    Max,
    /// The recorded pace times this factor (1 = as recorded, 2 = twice as fast).
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Speed, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        let x: f64 = s
            .strip_suffix('x')
            .unwrap_or(s)
            .parse()
            .map_err(|_| format!("bad speed {s:?}: use 1x, 2x, 0.5x or max"))?;
        if !(x.is_finite() && x > 0.0) {
            return Err(format!("bad speed {s:?}: the factor must be above 0"));
        }
        Ok(Speed::Times(x))
    }
}

/// What a capture held, and what the replay made of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    /// UDP datagrams in the capture.
    pub datagrams: u64,
    /// Datagrams and frames that are not Tickwire packets (other traffic,
    /// non-UDP frames), skipped.
    pub foreign: u64,
    /// Tickwire packets with a bad CRC or a malformed payload, skipped.
    pub bad: u64,
    /// Tickwire packets read (every kind).
    pub packets: u64,
    /// The session replayed (its epoch in the capture).
    pub epoch: u64,
    /// Packets of other sessions (epochs), skipped.
    pub other_epochs: u64,
    /// Message copies dropped as duplicates (A/B, retransmissions).
    pub duplicates: u64,
    /// Lowest and highest sequence the capture holds.
    pub first_seq: u64,
    /// Highest sequence the capture holds.
    pub last_seq: u64,
    /// Messages replayed (one pass).
    pub messages: u64,
    /// Messages of `1 ..= last_seq` the capture does not hold (its head
    /// before `first_seq`, and its holes).
    pub missing: u64,
    /// Holes inside `first_seq ..= last_seq`.
    pub holes: u64,
    /// Set when the capture ends in a damaged block (a recording cut short):
    /// what came before it is replayed.
    pub damaged: Option<String>,
}

/// A recorded session as a [`MessageSource`]. See the [module docs](self).
#[derive(Debug)]
pub struct Replay {
    /// Due offset from the first message (ns, at 1x) and the message.
    messages: Vec<(u64, Message)>,
    pos: usize,
    speed: Speed,
    looping: bool,
    /// Added to the due offsets of the current pass (--loop).
    pass_offset: u64,
    symbols: u32,
    report: ReplayReport,
}

impl Replay {
    /// Read the capture at `path`. `symbols` is the universe the replay
    /// serves at least (snapshots cover `0..symbols`); it grows to what the
    /// capture's snapshots or messages name.
    pub fn open(path: &Path, speed: Speed, looping: bool, symbols: u32) -> anyhow::Result<Replay> {
        let mut reader = CaptureReader::open(path)?;
        let mut report = ReplayReport::default();
        let mut by_seq: BTreeMap<u64, (Option<u64>, Message)> = BTreeMap::new();
        let mut epoch = None;
        let mut universe = symbols;
        for dg in reader.by_ref() {
            report.datagrams += 1;
            let Ok(p) = Packet::new_checked(dg.payload.as_slice()) else {
                report.foreign += 1;
                continue;
            };
            if p.verify_crc().is_err() {
                report.bad += 1;
                continue;
            }
            report.packets += 1;
            let kind = p.kind();
            if kind == PacketKind::Snapshot
                && let Ok(h) = SnapshotHeader::new_checked(p.payload())
            {
                universe = universe.max(h.symbols());
            }
            if !matches!(kind, PacketKind::Data | PacketKind::Retransmission) || p.count() == 0 {
                continue;
            }
            if *epoch.get_or_insert(p.epoch()) != p.epoch() {
                report.other_epochs += 1;
                continue;
            }
            let count = p.count();
            if MessageIter::validate(p.messages(), count).is_err() {
                report.bad += 1;
                continue;
            }
            // The recorded pace: the due times of a Data packet, else its arrival.
            let timing = p.timing();
            let first = p.first_seq().0;
            for (i, m) in MessageIter::new(p.messages(), count).enumerate() {
                let Ok(msg) = m else { break };
                let due = match (kind, timing) {
                    (_, Some(t)) => Some(t.due(i as u64, u64::from(count))),
                    (PacketKind::Data, None) => Some(dg.ts_ns),
                    _ => None,
                };
                if let Some(s) = msg.symbol() {
                    universe = universe.max(s.saturating_add(1));
                }
                let seq = first + i as u64;
                match by_seq.entry(seq) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert((due, msg));
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        report.duplicates += 1;
                        // A retransmission seen first has no due time: take the live copy's.
                        if o.get().0.is_none() && due.is_some() {
                            o.get_mut().0 = due;
                        }
                    }
                }
            }
        }
        report.foreign += reader.stats().foreign;
        report.damaged = reader.stats().damaged.clone();
        let Some(epoch) = epoch else {
            anyhow::bail!(
                "{} holds no Tickwire messages ({} datagrams, {} not Tickwire packets, {} bad)",
                path.display(),
                report.datagrams,
                report.foreign,
                report.bad
            );
        };
        report.epoch = epoch;
        report.first_seq = *by_seq.keys().next().expect("a session with messages");
        report.last_seq = *by_seq.keys().next_back().expect("a session with messages");
        report.messages = by_seq.len() as u64;
        report.missing = report.last_seq - report.messages;
        let mut prev = None;
        for &s in by_seq.keys() {
            if prev.is_some_and(|p| s != p + 1) {
                report.holes += 1;
            }
            prev = Some(s);
        }
        // Due times: a message without one is due with the one before it
        // (or the first known); never going backwards.
        let first_known = by_seq.values().find_map(|(d, _)| *d).unwrap_or(0);
        let mut last = first_known;
        let messages = by_seq
            .into_values()
            .map(|(due, msg)| {
                last = last.max(due.unwrap_or(last));
                (last - first_known, msg)
            })
            .collect();
        Ok(Replay { messages, pos: 0, speed, looping, pass_offset: 0, symbols: universe, report })
    }

    /// What the capture held.
    pub fn report(&self) -> &ReplayReport {
        &self.report
    }

    /// Length of one pass at 1x (first to last message).
    pub fn span(&self) -> Duration {
        Duration::from_nanos(self.messages.last().map_or(0, |m| m.0))
    }
}

impl MessageSource for Replay {
    fn symbols(&self) -> u32 {
        self.symbols
    }

    fn next_message(&mut self) -> Option<Message> {
        if self.pos == self.messages.len() && self.looping && !self.messages.is_empty() {
            // The next pass starts one mean interval after this one ended.
            let n = self.messages.len() as u64;
            let span = self.messages[self.messages.len() - 1].0;
            self.pass_offset += span + span / n.max(1);
            self.pos = 0;
        }
        let m = self.messages.get(self.pos)?.1;
        self.pos += 1;
        Some(m)
    }

    fn next_due(&self) -> Option<Duration> {
        let Speed::Times(x) = self.speed else { return None };
        let offset = match self.messages.get(self.pos) {
            Some(m) => m.0 + self.pass_offset,
            // At the end of a pass: the next pass's first message.
            None if self.looping && !self.messages.is_empty() => {
                let span = self.messages[self.messages.len() - 1].0;
                self.pass_offset + span + span / self.messages.len() as u64
            }
            None => return None,
        };
        Some(Duration::from_nanos((offset as f64 / x) as u64))
    }

    fn describe(&self) -> String {
        let r = &self.report;
        format!(
            "replay of session {} ({} messages, seq {}..={}, {} missing in {} holes{}), {} symbols, speed {}{}",
            r.epoch,
            r.messages,
            r.first_seq,
            r.last_seq,
            r.missing,
            r.holes,
            if r.first_seq > 1 { ", head missing" } else { "" },
            self.symbols,
            match self.speed {
                Speed::Max => "max".to_string(),
                Speed::Times(x) => format!("{x}x"),
            },
            if self.looping { ", looping" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::wire::{HEADER_LEN, PacketRepr, Timing, emit_message};
    use tickwire_core::{Line, Quote, SeqNo, Side, Trade};
    use tickwire_transports::pcap::{RecordConfig, Recorder};

    fn trade(i: u64) -> Message {
        Message::Trade(Trade {
            symbol: (i % 3) as u32,
            side: Side::Buy,
            price: i as i64,
            qty: 1,
            exch_ts: i,
            symbol_seq: 0,
        })
    }

    /// A packet of `kind` with the messages `first..first + n` (Data: with a
    /// timing block, message s due at s ms).
    fn packet(kind: PacketKind, epoch: u64, first: u64, n: u64) -> Vec<u8> {
        let msgs: Vec<Message> = (first..first + n).map(trade).collect();
        packet_of(kind, epoch, first, &msgs)
    }

    /// A packet of `kind` with `msgs` from sequence `first` (Data: with a
    /// timing block, message s due at s ms).
    fn packet_of(kind: PacketKind, epoch: u64, first: u64, msgs: &[Message]) -> Vec<u8> {
        let n = msgs.len() as u64;
        let mut buf = vec![0u8; 2048];
        let mut at = HEADER_LEN;
        let mut flags = 0;
        if kind == PacketKind::Data {
            Timing { first_due: first * 1_000_000, last_due: (first + n - 1) * 1_000_000 }
                .emit(&mut buf[at..]);
            at += 16;
            flags = 2;
        }
        for m in msgs {
            at += emit_message(m, &mut buf[at..]).unwrap();
        }
        let repr = PacketRepr {
            kind,
            flags,
            epoch,
            first_seq: SeqNo(first),
            count: n as u16,
            send_time: 0,
            payload_len: at - HEADER_LEN,
        };
        let len = repr.seal(&mut buf);
        buf.truncate(len);
        buf
    }

    fn capture(name: &str, packets: &[Vec<u8>]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tw-replay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cap.pcapng");
        let mut rec = Recorder::start(RecordConfig {
            path: path.clone(),
            rotate_bytes: None,
            source: "127.0.0.1:9100".parse().unwrap(),
            dest_a: "239.255.0.1:30001".parse().unwrap(),
            dest_b: "239.255.0.1:30001".parse().unwrap(),
        })
        .unwrap();
        for (i, p) in packets.iter().enumerate() {
            rec.record(Line::A, i as u64 * 1000, p);
        }
        rec.finish().unwrap();
        path
    }

    #[test]
    fn rebuilds_the_stream_in_order_without_duplicates_and_paced() {
        let mut bad = packet(PacketKind::Data, 7, 20, 1);
        bad[HEADER_LEN + 20] ^= 1; // CRC no longer matches
        let path = capture(
            "order",
            &[
                packet(PacketKind::Data, 7, 1, 3),
                packet(PacketKind::Data, 7, 6, 2), // 4, 5 lost
                packet(PacketKind::Data, 7, 6, 2), // the B copy
                packet(PacketKind::Retransmission, 7, 4, 2), // recovered
                packet(PacketKind::Data, 9, 1, 1), // another session
                b"not a tickwire packet".to_vec(),
                bad,
            ],
        );
        let mut r = Replay::open(&path, Speed::Times(2.0), false, 10).unwrap();
        let rep = r.report().clone();
        assert_eq!((rep.epoch, rep.first_seq, rep.last_seq, rep.messages), (7, 1, 7, 7));
        assert_eq!((rep.missing, rep.holes, rep.duplicates), (0, 0, 2));
        assert_eq!((rep.other_epochs, rep.foreign, rep.bad), (1, 1, 1));
        let mut got = Vec::new();
        while let Some(d) = r.next_due() {
            got.push((d, r.next_message().unwrap()));
        }
        assert!(r.next_message().is_none());
        let want: Vec<_> = (1..=7).map(trade).collect();
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), want);
        // Message s due at s ms, from 1; halved at 2x; 4 and 5 (retransmitted) with 3.
        let ms: Vec<u64> = got.iter().map(|g| g.0.as_micros() as u64).collect();
        assert_eq!(ms, [0, 500, 1000, 1000, 1000, 2500, 3000]);
    }

    /// A replay re-publishes each message as recorded, the symbol's update
    /// numbers included (PROTOCOL.md § 4.2): a Quote's u64, a Trade's low 32
    /// bits, and a Trade's 0 (not carried, an older publisher) stays 0.
    #[test]
    fn carries_the_recorded_symbol_seqs_through() {
        let quote = |symbol, symbol_seq| {
            Message::Quote(Quote {
                symbol,
                bid_px: 10,
                ask_px: 11,
                bid_qty: 1,
                ask_qty: 2,
                exch_ts: symbol_seq,
                symbol_seq,
            })
        };
        let trade = |symbol, symbol_seq| {
            Message::Trade(Trade {
                symbol,
                side: Side::Sell,
                price: 10,
                qty: 3,
                exch_ts: 9,
                symbol_seq,
            })
        };
        let msgs = [
            quote(1, (1 << 32) + 6),
            trade(1, Trade::wire_symbol_seq((1 << 32) + 7)),
            trade(2, 0),
            trade(3, u32::MAX),
            quote(3, 1 << 32),
        ];
        let packets = [
            packet_of(PacketKind::Data, 7, 1, &msgs[..2]),
            packet_of(PacketKind::Data, 7, 4, &msgs[3..]), // 3 lost
            packet_of(PacketKind::Retransmission, 7, 3, &msgs[2..3]), // recovered
        ];
        let path = capture("symbol-seq", &packets);
        let mut r = Replay::open(&path, Speed::Max, false, 10).unwrap();
        let got: Vec<Message> = std::iter::from_fn(|| r.next_message()).collect();
        assert_eq!(got, msgs);
        // Re-emitted, each Trade's bytes 20..24 are those recorded (in the
        // first packet after the timing block and the Quote; alone in the
        // retransmission).
        let mut b = [0u8; 32];
        let t = HEADER_LEN + 16 + 48;
        emit_message(&got[1], &mut b).unwrap();
        assert_eq!(b[20..24], packets[0][t + 20..t + 24]);
        assert_eq!(b[20..24], [7, 0, 0, 0]);
        emit_message(&got[2], &mut b).unwrap();
        assert_eq!(b[20..24], packets[2][HEADER_LEN + 20..HEADER_LEN + 24]);
        assert_eq!(b[20..24], [0; 4]);
    }

    #[test]
    fn a_hole_and_a_late_start_are_counted_missing() {
        let path = capture(
            "holes",
            &[packet(PacketKind::Data, 7, 5, 2), packet(PacketKind::Data, 7, 10, 1)],
        );
        let mut r = Replay::open(&path, Speed::Max, false, 10).unwrap();
        let rep = r.report();
        assert_eq!((rep.first_seq, rep.last_seq, rep.messages), (5, 10, 3));
        assert_eq!((rep.missing, rep.holes), (7, 1), "1..=4 and 7..=9");
        assert_eq!(r.next_due(), None, "max speed: no pace of its own");
        assert_eq!(r.next_message(), Some(trade(5)));
    }

    #[test]
    fn loops_and_refuses_empty_captures() {
        let path = capture("loop", &[packet(PacketKind::Data, 7, 1, 2)]);
        let mut r = Replay::open(&path, Speed::Times(1.0), true, 10).unwrap();
        let seq: Vec<_> = (0..5).map(|_| r.next_message().unwrap()).collect();
        assert_eq!(seq, [trade(1), trade(2), trade(1), trade(2), trade(1)]);
        let empty = capture("empty", &[b"nothing".to_vec()]);
        let e = Replay::open(&empty, Speed::Max, false, 10).unwrap_err().to_string();
        assert!(e.contains("holds no Tickwire messages"), "{e}");
        assert_eq!("2x".parse::<Speed>(), Ok(Speed::Times(2.0)));
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert!("0x".parse::<Speed>().is_err() && "fast".parse::<Speed>().is_err());
    }
}
