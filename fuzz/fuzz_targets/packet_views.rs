//! Every wire view over arbitrary bytes: after `check_len` succeeds, no
//! accessor may panic (the wire module's contract).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_core::wire::{
    LoginAckRepr, MessageIter, NackRejectRepr, Packet, PacketRepr, SnapshotRepr, frame_len,
};

fuzz_target!(|data: &[u8]| {
    let framed = frame_len(data);
    let Ok(p) = Packet::new_checked(data) else {
        return;
    };
    // check_len Ok implies frame_len agrees on the length.
    assert_eq!(framed, Ok(Some(p.total_len())));
    let _ = (p.magic(), p.version(), p.kind(), p.count(), p.flags(), p.epoch());
    let _ = (p.first_seq(), p.send_time(), p.crc(), p.has_timing(), p.as_bytes().len());
    let _ = p.verify_crc();
    let _ = PacketRepr::parse(&p);
    if let Some(t) = p.timing() {
        let n = u64::from(p.count());
        // The first few dues only: a count of 65535 would make this target slow.
        let dues: Vec<u64> = t.dues(n).take(usize::from(p.count().min(64))).collect();
        for (i, d) in dues.iter().enumerate() {
            assert_eq!(*d, t.due(i as u64, n));
        }
    }
    let payload = p.payload();
    let messages = p.messages();
    assert!(messages.len() <= payload.len());
    let ok = MessageIter::validate(messages, p.count()).is_ok();
    let parsed = MessageIter::new(messages, p.count()).take_while(|m| m.is_ok()).count();
    if ok {
        assert_eq!(parsed, usize::from(p.count()));
    }
    // Iterating a bigger count than present must end, not panic.
    for m in MessageIter::new(messages, u16::MAX) {
        if m.is_err() {
            break;
        }
    }
    if let Ok(s) = SnapshotRepr::parse(payload, p.count()) {
        assert!(s.part < s.parts);
        assert_eq!(s.records().count(), usize::from(p.count()));
    }
    let _ = LoginAckRepr::parse(payload);
    let _ = NackRejectRepr::parse(payload);
});
