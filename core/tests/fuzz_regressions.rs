//! Regression tests for inputs found by the fuzz targets in `fuzz/`
//! (`RUSTC_BOOTSTRAP=1 cargo fuzz run <target> --fuzz-dir fuzz`).
//!
//! Every crash a target finds becomes a test here: the crashing bytes, fed to
//! the same API, asserting that nothing panics and that the input is counted
//! or dropped as the protocol says. A test whose fix is pending in core is
//! `#[ignore = "..."]` until it lands.
//!
//! No fuzz target has crashed yet; the tests below pin the boundary classes
//! the targets' seed corpora start from (empty, truncated, padded, absurd
//! length, bad CRC), so the file is ready for the first real finding.

use tickwire_core::publisher::{IgnoreReason, RequestOutcome, Sequencer, SequencerConfig};
use tickwire_core::recovery::{Mode, Receiver, ReceiverConfig};
use tickwire_core::wire::{
    HEADER_LEN, LoginAckRepr, MessageIter, NackRejectRepr, Packet, PacketKind, PacketRepr,
    SnapshotRepr, frame_len,
};
use tickwire_core::{Instant, Line, SeqNo};

const EPOCH: u64 = 0xE90C;

/// What the `packet_views` target does with one input.
fn packet_views(data: &[u8]) {
    let framed = frame_len(data);
    let Ok(p) = Packet::new_checked(data) else {
        return;
    };
    assert_eq!(framed, Ok(Some(p.total_len())));
    let _ = PacketRepr::parse(&p);
    let _ = p.timing();
    let _ = MessageIter::validate(p.messages(), p.count());
    let _ = SnapshotRepr::parse(p.payload(), p.count());
    let _ = LoginAckRepr::parse(p.payload());
    let _ = NackRejectRepr::parse(p.payload());
}

/// Feed `data` to a fresh receiver in both modes; returns (malformed, bad_crc) per mode.
fn receiver_counts(data: &[u8]) -> Vec<(u64, u64)> {
    [Mode::Datagram, Mode::Stream]
        .into_iter()
        .map(|mode| {
            let mut rx =
                Receiver::new(ReceiverConfig { mode, max_buffered: 256, ..Default::default() });
            rx.handle_packet(Instant(1), Line::A, data);
            while rx.poll_event().is_some() {}
            (rx.stats().malformed, rx.stats().bad_crc)
        })
        .collect()
}

fn heartbeat(payload_len_field: u32) -> Vec<u8> {
    let repr = PacketRepr {
        kind: PacketKind::Heartbeat,
        flags: 0,
        epoch: EPOCH,
        first_seq: SeqNo(5),
        count: 0,
        send_time: 7,
        payload_len: 0,
    };
    let mut b = vec![0u8; HEADER_LEN];
    repr.emit_bare(&mut b);
    b[32..36].copy_from_slice(&payload_len_field.to_le_bytes());
    b
}

#[test]
fn empty_and_short_inputs_are_dropped() {
    for len in [0usize, 1, 2, 39] {
        let data = &heartbeat(0)[..len];
        packet_views(data);
        assert_eq!(receiver_counts(data), vec![(1, 0), (1, 0)], "len {len}");
    }
}

#[test]
fn absurd_payload_length_is_malformed() {
    let data = heartbeat(u32::MAX);
    packet_views(&data);
    assert!(frame_len(&data).is_err());
    assert_eq!(receiver_counts(&data), vec![(1, 0), (1, 0)]);
}

#[test]
fn padded_datagram_with_bad_crc_is_counted() {
    let mut data = heartbeat(0);
    data[20] ^= 1; // first_seq changed: CRC no longer matches
    data.extend_from_slice(&[0xAA; 9]);
    packet_views(&data);
    assert_eq!(receiver_counts(&data), vec![(0, 1), (0, 1)]);
}

#[test]
fn publisher_ignores_garbage_requests() {
    let mut p = Sequencer::new(SequencerConfig {
        retransmit_window: 32,
        ..SequencerConfig::new(EPOCH, 64)
    });
    for data in [&[][..], &[0x54, 0x57][..], &heartbeat(0)[..], &heartbeat(u32::MAX)[..]] {
        let out = p.handle_request(Instant(1), 1, 0, data, &mut |_| panic!("no reply expected"));
        assert!(
            matches!(
                out,
                RequestOutcome::Ignored(IgnoreReason::Malformed(_) | IgnoreReason::NotARequest(_))
            ),
            "{out:?}"
        );
    }
}
