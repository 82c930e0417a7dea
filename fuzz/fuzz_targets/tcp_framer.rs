//! The TCP framing logic, through its public building blocks: a byte stream
//! arrives split at arbitrary points; a framer buffers until `frame_len` says
//! a packet is complete, hands the packet on, and drops the connection on a
//! framing error. This mirrors transports/src/tcp/framer.rs (crate-private)
//! without touching it: `frame_len` must never panic, never ask for fewer
//! bytes than a header or more than MAX_PACKET_LEN, be stable as more bytes
//! arrive, and every frame it delimits must pass `Packet::check_len`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_core::wire::{HEADER_LEN, MAX_PACKET_LEN, Packet, frame_len};

fuzz_target!(|data: &[u8]| {
    // First byte: number of split points; then split sizes; the rest is the stream.
    let Some((&nsplits, rest)) = data.split_first() else {
        return;
    };
    let nsplits = usize::from(nsplits % 16);
    if rest.len() < nsplits {
        return;
    }
    let (splits, stream) = rest.split_at(nsplits);
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut chunks =
        splits.iter().map(|&s| usize::from(s) + 1).chain(std::iter::repeat(usize::MAX));
    let mut frames = 0usize;
    let mut consumed = 0usize;
    while pos < stream.len() {
        let n = chunks.next().unwrap_or(usize::MAX).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        loop {
            match frame_len(&buf) {
                Ok(None) => {
                    assert!(buf.len() < HEADER_LEN);
                    break;
                }
                Ok(Some(len)) => {
                    assert!((HEADER_LEN..=MAX_PACKET_LEN).contains(&len));
                    // Stable: a prefix holding the header gives the same answer.
                    assert_eq!(frame_len(&buf[..HEADER_LEN]), Ok(Some(len)));
                    if buf.len() < len {
                        break;
                    }
                    let p = Packet::new_checked(&buf[..len]).expect("frame_len frames packets");
                    assert_eq!(p.total_len(), len);
                    let _ = p.verify_crc();
                    buf.drain(..len);
                    consumed += len;
                    frames += 1;
                }
                Err(_) => {
                    // Connection dropped: a framing error is final, whatever follows.
                    let mut more = buf.clone();
                    more.extend_from_slice(&stream[pos..]);
                    assert!(frame_len(&more).is_err());
                    return;
                }
            }
        }
    }
    // The same stream in one piece frames identically.
    let mut whole = stream;
    let mut frames2 = 0;
    while let Ok(Some(len)) = frame_len(whole) {
        if whole.len() < len {
            break;
        }
        whole = &whole[len..];
        frames2 += 1;
    }
    assert_eq!(frames, frames2);
    assert_eq!(consumed + buf.len(), stream.len());
});
