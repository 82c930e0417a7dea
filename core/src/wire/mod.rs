//! The Tickwire wire format: zero-copy views over byte buffers, in smoltcp's style.
//!
//! Every view is a `Packet<T: AsRef<[u8]>>`-like wrapper with `new_unchecked`,
//! `new_checked` (which calls `check_len`) and `into_inner`; getters live in one
//! impl, setters in an `AsMut<[u8]>` impl. **Contract:** once `check_len()` has
//! returned `Ok`, no accessor panics, whatever the bytes are. Plain `Repr` types
//! (`PacketRepr`, [`crate::msg::Message`], ...) parse from and emit into views.
//!
//! The byte-level specification is `docs/PROTOCOL.md`; the `field` constants
//! here are its offsets, and the test vectors there are checked by this crate's
//! tests (`tests/protocol_vectors.rs`).
//!
//! Layers:
//! ```text
//! packet  = header (40 bytes) + payload (payload_len bytes)
//! payload = [timing block] messages (Data, Retransmission) -- see `message`, [`Timing`]
//!         | snapshot part header + symbol records  -- see `snapshot`
//!         | control body (LoginAck, NackReject)    -- see `control`
//!         | Status body; 8-byte token (Probe nonce, request cookie) -- see `status`
//!         | empty (Heartbeat, EndOfSession, Nack, SnapshotRequest, Login)
//! ```

pub mod auth;
mod control;
mod message;
mod packet;
mod snapshot;
mod status;

pub use control::{LoginAck, LoginAckRepr, LoginMode, NackReject, NackRejectRepr};
pub use message::{
    MessageIter, MessageKind, Quote, Trade, emit_message, message_len, parse_message,
};
pub use packet::{Packet, PacketKind, PacketRepr, frame_len};

pub use snapshot::{SnapshotHeader, SnapshotRecord, SnapshotRepr, emit_record, parse_record};
pub use status::{Status, StatusRepr, TOKEN_LEN, emit_token, parse_token};

/// A byte range inside a buffer.
pub type Field = core::ops::Range<usize>;

/// The protocol's magic number, `"TW"` read as a little-endian u16.
pub const MAGIC: u16 = 0x5754;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes in the packet header.
pub const HEADER_LEN: usize = 40;
/// Largest payload a receiver accepts. A TCP stream frames packets by the
/// header's `payload_len`; anything larger is an absurd length field, not a
/// packet, and the connection is dropped. 64 KiB covers every UDP datagram.
pub const MAX_PAYLOAD_LEN: usize = 65_536 - HEADER_LEN;
/// Largest packet a receiver accepts.
pub const MAX_PACKET_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN;
/// Default packet size limit for datagram transports: an Ethernet MTU of 1500
/// minus the IPv4 (20) and UDP (8) headers, so no datagram is ever fragmented.
pub const DEFAULT_MAX_PACKET: usize = 1472;

/// The due times of a packet's messages, from [`Timing::dues`]: message `i`
/// is due at `first + floor(span * i / steps)`, kept as a quotient and a
/// running remainder so that no step divides.
#[derive(Clone, Copy, Debug)]
pub struct Dues {
    next: u64,
    quot: u64,
    rem: u64,
    acc: u64,
    steps: u64,
}

impl Iterator for Dues {
    type Item = u64;
    #[inline]
    fn next(&mut self) -> Option<u64> {
        let due = self.next;
        // next = first + floor(span * (i + 1) / steps), with span = quot * steps + rem.
        self.acc += self.rem;
        let carry = self.acc >= self.steps;
        if carry {
            self.acc -= self.steps;
        }
        self.next = self.next.saturating_add(self.quot + u64::from(carry));
        Some(due)
    }
}

/// `flags` bit 0: the packet was sent on feed line B (A/B arbitration).
pub const FLAG_LINE_B: u16 = 1 << 0;
/// `flags` bit 1, Data packets only: the payload starts with a [`Timing`]
/// block ([`TIMING_LEN`] bytes) before the messages. `payload_len` includes it.
pub const FLAG_TIMING: u16 = 1 << 1;
/// `flags` bit 2, Nack and SnapshotRequest only: the payload is the 8-byte
/// cookie the recovery service gave this host in a Status packet
/// ([`TOKEN_LEN`]), proving the request comes from the address it claims.
pub const FLAG_COOKIE: u16 = 1 << 2;
/// Bytes of the [`Timing`] block.
pub const TIMING_LEN: usize = 16;

/// The due times of a Data packet's messages: when the simulated exchange
/// events happened, in wall-clock ns since the Unix epoch. Message `i` of `n`
/// is due at `first_due + (last_due - first_due) * i / (n - 1)`: exact for a
/// feed paced at a fixed rate (its messages are evenly spaced), and the
/// generation times' linear fit otherwise. A receiver measures a message's
/// latency from this instant, not from the packet's `send_time`.
///
/// ```text
/// payload offset  0..8   first_due  u64 LE  due time of the first message
///                 8..16  last_due   u64 LE  due time of the last message
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timing {
    /// Due time of the packet's first message (ns since the Unix epoch).
    pub first_due: u64,
    /// Due time of its last message (at least `first_due`).
    pub last_due: u64,
}

impl Timing {
    /// Read a timing block (the first [`TIMING_LEN`] bytes of `b`).
    pub fn parse(b: &[u8]) -> Option<Timing> {
        if b.len() < TIMING_LEN {
            return None;
        }
        Some(Timing { first_due: get_u64(b, 0), last_due: get_u64(b, 8) })
    }

    /// Write it into the first [`TIMING_LEN`] bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        set_u64(b, 0, self.first_due);
        set_u64(b, 8, self.last_due);
    }

    /// The due times of all `count` messages, in order: the same values as
    /// [`Self::due`], by additions only (a receiver computes one per message).
    pub fn dues(&self, count: u64) -> Dues {
        let steps = count.saturating_sub(1).max(1);
        let span = self.last_due.saturating_sub(self.first_due);
        Dues { next: self.first_due, quot: span / steps, rem: span % steps, acc: 0, steps }
    }

    /// Due time of message `index` of `count` (interpolated; saturating, so a
    /// forged block cannot overflow). The reference formula of
    /// docs/PROTOCOL.md; [`Self::dues`] yields the same values faster.
    pub fn due(&self, index: u64, count: u64) -> u64 {
        if count <= 1 || self.last_due <= self.first_due {
            return self.first_due;
        }
        let span = u128::from(self.last_due - self.first_due);
        let i = u128::from(index.min(count - 1));
        self.first_due + (span * i / u128::from(count - 1)) as u64
    }
}

/// Why bytes could not be decoded. Every variant is counted by receivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The magic number is not [`MAGIC`].
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    /// A protocol version this crate does not speak.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// The CRC32C does not match the bytes.
    #[error("bad CRC: header says {expected:#010x}, bytes give {actual:#010x}")]
    BadCrc {
        /// CRC carried in the header.
        expected: u32,
        /// CRC computed over the bytes.
        actual: u32,
    },
    /// A length field is impossible (payload too large, message length below its
    /// minimum or past the payload's end, count disagreeing with the payload).
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// Read a little-endian `u16` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Read a little-endian `u32` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Read a little-endian `u64` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dues_match_the_reference_formula() {
        let cases = [
            (1_000u64, 1_000u64, 1u64),
            (1_000, 1_999, 2),
            (1_000, 1_007, 3),
            (5, 5 + 290_000, 29),
            (u64::MAX - 10, u64::MAX, 7),
            (1_764_000_000_999_990_000, 1_764_000_000_999_999_000, 2),
            (9, 3, 4), // last before first (forged): every message at first
        ];
        for (first, last, count) in cases {
            let t = Timing { first_due: first, last_due: last };
            let fast: Vec<u64> = t.dues(count).take(count as usize).collect();
            let reference: Vec<u64> = (0..count).map(|i| t.due(i, count)).collect();
            assert_eq!(fast, reference, "{first} {last} {count}");
            assert_eq!(fast.first(), Some(&first));
            if last >= first {
                assert_eq!(
                    fast.last(),
                    Some(&last.max(first)).filter(|_| count > 1).or(Some(&first))
                );
            }
        }
        // Every count a packet can hold, over an awkward span.
        let t = Timing { first_due: 77, last_due: 77 + 1_000_003 };
        for count in 1..=2_047u64 {
            let fast: Vec<u64> = t.dues(count).take(count as usize).collect();
            assert!(fast.iter().enumerate().all(|(i, &d)| d == t.due(i as u64, count)), "{count}");
        }
    }

    #[test]
    fn timing_block_round_trips() {
        let t = Timing { first_due: 0x0102_0304_0506_0708, last_due: u64::MAX };
        let mut b = [0u8; TIMING_LEN];
        t.emit(&mut b);
        assert_eq!(b[0], 0x08, "little-endian");
        assert_eq!(Timing::parse(&b), Some(t));
        assert_eq!(Timing::parse(&b[..15]), None);
    }
}
