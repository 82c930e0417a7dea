//! The packet header: every Tickwire packet, data or control, starts with it.

use super::{
    DecodeError, FLAG_TIMING, Field, HEADER_LEN, MAGIC, MAX_PAYLOAD_LEN, TIMING_LEN, Timing,
    VERSION, get_u16, get_u32, get_u64, set_u16, set_u32, set_u64,
};
use crate::seq::SeqNo;

mod field {
    use super::Field;
    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const COUNT: Field = 4..6;
    pub const FLAGS: Field = 6..8;
    pub const EPOCH: Field = 8..16;
    pub const FIRST_SEQ: Field = 16..24;
    pub const SEND_TIME: Field = 24..32;
    pub const PAYLOAD_LEN: Field = 32..36;
    pub const CRC: Field = 36..40;
}

/// What a packet is. Values below 16 flow from the server, 16 and above from clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// Live sequenced messages: `first_seq`, `count` messages in the payload.
    Data,
    /// No messages; `first_seq` is the next sequence the server will send.
    Heartbeat,
    /// Messages re-sent in answer to a NACK or a TCP resume; same layout as Data.
    Retransmission,
    /// One part of a snapshot consistent at `first_seq` (state after every message
    /// below it); `count` symbol records.
    Snapshot,
    /// The session ends; `first_seq` is one past the last message.
    EndOfSession,
    /// The server's answer to a Login.
    LoginAck,
    /// The server cannot serve a NACK'd range: it lies outside its window.
    NackReject,
    /// The recovery service's unicast answer to a Probe, or its challenge to a
    /// request without a valid cookie: `epoch` and `first_seq` are the
    /// server's session and next sequence; the body carries the cookie.
    Status,
    /// The recovery service announces, on the feed's group, that it will
    /// multicast the `count` messages from `first_seq` (PGM's NCF): a
    /// subscriber missing some of them does not NACK them itself. Empty
    /// payload.
    RepairNotice,
    /// A client asks for `count` messages from `first_seq`.
    Nack,
    /// A client asks for a snapshot.
    SnapshotRequest,
    /// A TCP client opens or resumes: `epoch` it knows (0 = none), `first_seq` it wants next.
    Login,
    /// A client asks the recovery service for its Status; the payload is an
    /// 8-byte nonce the Status echoes.
    Probe,
    /// A kind this version does not know.
    Unknown(u8),
}

impl PacketKind {
    /// The wire byte.
    pub const fn to_byte(self) -> u8 {
        match self {
            PacketKind::Data => 1,
            PacketKind::Heartbeat => 2,
            PacketKind::Retransmission => 3,
            PacketKind::Snapshot => 4,
            PacketKind::EndOfSession => 5,
            PacketKind::LoginAck => 6,
            PacketKind::NackReject => 7,
            PacketKind::Status => 8,
            PacketKind::RepairNotice => 9,
            PacketKind::Nack => 16,
            PacketKind::SnapshotRequest => 17,
            PacketKind::Login => 18,
            PacketKind::Probe => 19,
            PacketKind::Unknown(b) => b,
        }
    }

    /// The kind for a wire byte.
    pub const fn from_byte(b: u8) -> PacketKind {
        match b {
            1 => PacketKind::Data,
            2 => PacketKind::Heartbeat,
            3 => PacketKind::Retransmission,
            4 => PacketKind::Snapshot,
            5 => PacketKind::EndOfSession,
            6 => PacketKind::LoginAck,
            7 => PacketKind::NackReject,
            8 => PacketKind::Status,
            9 => PacketKind::RepairNotice,
            16 => PacketKind::Nack,
            17 => PacketKind::SnapshotRequest,
            18 => PacketKind::Login,
            19 => PacketKind::Probe,
            b => PacketKind::Unknown(b),
        }
    }

    /// True for kinds whose payload is a batch of sequenced messages.
    pub const fn carries_messages(self) -> bool {
        matches!(self, PacketKind::Data | PacketKind::Retransmission)
    }
}

/// A read/write view of a packet: header plus payload.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checks. Accessors may panic until [`Self::check_len`] succeeds.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer and [`Self::check_len`] it.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, DecodeError> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Check that the header fits, that the magic and version are ours, and that
    /// the payload the header announces is present and not absurd. After `Ok`, no
    /// accessor panics. Trailing bytes past the payload are allowed (a datagram
    /// may be padded); [`Self::total_len`] says where the packet ends.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DecodeError::Truncated { need: HEADER_LEN, have: b.len() });
        }
        let magic = get_u16(b, field::MAGIC.start);
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        if b[field::VERSION] != VERSION {
            return Err(DecodeError::BadVersion(b[field::VERSION]));
        }
        let payload = get_u32(b, field::PAYLOAD_LEN.start) as usize;
        if payload > MAX_PAYLOAD_LEN {
            return Err(DecodeError::Malformed("payload length above the maximum"));
        }
        if b.len() < HEADER_LEN + payload {
            return Err(DecodeError::Truncated { need: HEADER_LEN + payload, have: b.len() });
        }
        Ok(())
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The magic field.
    pub fn magic(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::MAGIC.start)
    }
    /// The version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// The packet kind.
    pub fn kind(&self) -> PacketKind {
        PacketKind::from_byte(self.buffer.as_ref()[field::KIND])
    }
    /// Number of messages or records.
    pub fn count(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::COUNT.start)
    }
    /// Flags (bit 0 [`FLAG_LINE_B`](super::FLAG_LINE_B): sent on feed line B; bit 1 [`FLAG_TIMING`]:
    /// a Data payload starts with a [`Timing`] block; others reserved, zero).
    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLAGS.start)
    }
    /// The session epoch.
    pub fn epoch(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::EPOCH.start)
    }
    /// First sequence number (meaning depends on the kind).
    pub fn first_seq(&self) -> SeqNo {
        SeqNo(get_u64(self.buffer.as_ref(), field::FIRST_SEQ.start))
    }
    /// Sender's wall-clock time in ns since the Unix epoch.
    pub fn send_time(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::SEND_TIME.start)
    }
    /// Bytes of payload after the header.
    pub fn payload_len(&self) -> usize {
        get_u32(self.buffer.as_ref(), field::PAYLOAD_LEN.start) as usize
    }
    /// The CRC32C carried in the header.
    pub fn crc(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::CRC.start)
    }
    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }
    /// True if this is a Data packet whose payload starts with a [`Timing`] block.
    pub fn has_timing(&self) -> bool {
        self.kind() == PacketKind::Data
            && self.flags() & FLAG_TIMING != 0
            && self.payload_len() >= TIMING_LEN
    }
    /// The due times of a Data packet's messages, when it carries them.
    pub fn timing(&self) -> Option<Timing> {
        if self.has_timing() { Timing::parse(self.payload()) } else { None }
    }
    /// The messages of a Data or Retransmission packet: the payload after the
    /// [`Timing`] block, if there is one. A Data packet flagged
    /// [`FLAG_TIMING`] whose payload is shorter than the block has no
    /// messages (and is malformed if its count is not 0).
    pub fn messages(&self) -> &[u8] {
        let p = self.payload();
        if self.kind() == PacketKind::Data && self.flags() & FLAG_TIMING != 0 {
            p.get(TIMING_LEN..).unwrap_or(&[])
        } else {
            p
        }
    }
    /// The packet's bytes: header plus payload, without trailing bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len()]
    }

    /// CRC32C over the header without its CRC field, then the payload.
    pub fn compute_crc(&self) -> u32 {
        let b = self.buffer.as_ref();
        let c = crc32c::crc32c(&b[..field::CRC.start]);
        crc32c::crc32c_append(c, self.payload())
    }

    /// Check the CRC.
    pub fn verify_crc(&self) -> Result<(), DecodeError> {
        let actual = self.compute_crc();
        let expected = self.crc();
        if actual == expected { Ok(()) } else { Err(DecodeError::BadCrc { expected, actual }) }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the magic field.
    pub fn set_magic(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::MAGIC.start, v)
    }
    /// Set the version field.
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v
    }
    /// Set the kind.
    pub fn set_kind(&mut self, v: PacketKind) {
        self.buffer.as_mut()[field::KIND] = v.to_byte()
    }
    /// Set the count.
    pub fn set_count(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::COUNT.start, v)
    }
    /// Set the flags.
    pub fn set_flags(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::FLAGS.start, v)
    }
    /// Set the epoch.
    pub fn set_epoch(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), field::EPOCH.start, v)
    }
    /// Set the first sequence.
    pub fn set_first_seq(&mut self, v: SeqNo) {
        set_u64(self.buffer.as_mut(), field::FIRST_SEQ.start, v.0)
    }
    /// Set the send time.
    pub fn set_send_time(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), field::SEND_TIME.start, v)
    }
    /// Set the payload length.
    pub fn set_payload_len(&mut self, v: usize) {
        set_u32(self.buffer.as_mut(), field::PAYLOAD_LEN.start, v as u32)
    }
    /// Set the CRC field.
    pub fn set_crc(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::CRC.start, v)
    }
    /// Compute and store the CRC (call after everything else is written).
    pub fn fill_crc(&mut self) {
        let c = self.compute_crc();
        self.set_crc(c)
    }
    /// The payload, mutably (`payload_len` must already be set).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A packet header as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRepr {
    /// Kind.
    pub kind: PacketKind,
    /// Flags.
    pub flags: u16,
    /// Session epoch.
    pub epoch: u64,
    /// First sequence.
    pub first_seq: SeqNo,
    /// Message or record count.
    pub count: u16,
    /// Send time, ns since the Unix epoch.
    pub send_time: u64,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl PacketRepr {
    /// Parse the header of a checked packet, verifying its CRC.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<PacketRepr, DecodeError> {
        packet.check_len()?;
        packet.verify_crc()?;
        Ok(PacketRepr {
            kind: packet.kind(),
            flags: packet.flags(),
            epoch: packet.epoch(),
            first_seq: packet.first_seq(),
            count: packet.count(),
            send_time: packet.send_time(),
            payload_len: packet.payload_len(),
        })
    }

    /// Header plus payload length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Write the header (CRC left zero: write the payload, then call
    /// [`Packet::fill_crc`]). The buffer must hold [`Self::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_magic(MAGIC);
        packet.set_version(VERSION);
        packet.set_kind(self.kind);
        packet.set_count(self.count);
        packet.set_flags(self.flags);
        packet.set_epoch(self.epoch);
        packet.set_first_seq(self.first_seq);
        packet.set_send_time(self.send_time);
        packet.set_payload_len(self.payload_len);
        packet.set_crc(0);
    }

    /// Seal a packet whose payload (`payload_len` bytes) is already in place
    /// at `buf[HEADER_LEN..]`: write the header in front of it and fill the
    /// CRC. Returns the packet's length, `HEADER_LEN + payload_len`.
    ///
    /// Panics if `buf` is shorter than that.
    ///
    /// ```
    /// use tickwire_core::SeqNo;
    /// use tickwire_core::wire::{HEADER_LEN, Packet, PacketKind, PacketRepr};
    ///
    /// let payload = [7u8; 48];
    /// let repr = PacketRepr {
    ///     kind: PacketKind::Data,
    ///     flags: 0,
    ///     epoch: 1,
    ///     first_seq: SeqNo(1),
    ///     count: 1,
    ///     send_time: 0,
    ///     payload_len: payload.len(),
    /// };
    /// let mut buf = vec![0u8; repr.buffer_len()];
    /// buf[HEADER_LEN..].copy_from_slice(&payload);
    /// assert_eq!(repr.seal(&mut buf), buf.len());
    /// assert!(Packet::new_checked(&buf[..]).unwrap().verify_crc().is_ok());
    /// ```
    pub fn seal(&self, buf: &mut [u8]) -> usize {
        let len = HEADER_LEN + self.payload_len;
        let mut p = Packet::new_unchecked(&mut buf[..len]);
        self.emit(&mut p);
        p.fill_crc();
        len
    }

    /// Emit a header-only packet (Heartbeat, EndOfSession, Nack, SnapshotRequest,
    /// Login) with its CRC into `buf`; returns its length.
    pub fn emit_bare(&self, buf: &mut [u8]) -> usize {
        debug_assert_eq!(self.payload_len, 0);
        self.seal(buf)
    }
}

/// For stream transports: given the bytes received so far, how long is the
/// packet at their start? `Ok(None)` means the header is not complete yet.
/// Rejects a bad magic, a bad version or an absurd length as soon as the header
/// is in, so a stream of garbage is dropped without buffering it.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        // Reject a bad magic early, even before the whole header arrives.
        if buf.len() >= 2 && get_u16(buf, 0) != MAGIC {
            return Err(DecodeError::BadMagic(get_u16(buf, 0)));
        }
        return Ok(None);
    }
    let p = Packet::new_unchecked(buf);
    if p.magic() != MAGIC {
        return Err(DecodeError::BadMagic(p.magic()));
    }
    if p.version() != VERSION {
        return Err(DecodeError::BadVersion(p.version()));
    }
    let payload = p.payload_len();
    if payload > MAX_PAYLOAD_LEN {
        return Err(DecodeError::Malformed("payload length above the maximum"));
    }
    Ok(Some(HEADER_LEN + payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heartbeat: epoch 0x0102030405060708, next sequence 42, send time 1e18.
    static HEARTBEAT_BYTES: [u8; 40] = [
        0x54, 0x57, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, // magic, version, kind, count, flags
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // epoch
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first_seq = 42
        0x00, 0x00, 0x64, 0xa7, 0xb3, 0xb6, 0xe0, 0x0d, // send_time = 1e18
        0x00, 0x00, 0x00, 0x00, // payload_len
        0x00, 0x00, 0x00, 0x00, // crc (patched in the test)
    ];

    fn heartbeat_repr() -> PacketRepr {
        PacketRepr {
            kind: PacketKind::Heartbeat,
            flags: 0,
            epoch: 0x0102_0304_0506_0708,
            first_seq: SeqNo(42),
            count: 0,
            send_time: 1_000_000_000_000_000_000,
            payload_len: 0,
        }
    }

    #[test]
    fn deconstruct() {
        let mut bytes = HEARTBEAT_BYTES;
        let crc = {
            let p = Packet::new_unchecked(&bytes[..]);
            p.compute_crc()
        };
        bytes[36..40].copy_from_slice(&crc.to_le_bytes());
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.kind(), PacketKind::Heartbeat);
        assert_eq!(p.epoch(), 0x0102_0304_0506_0708);
        assert_eq!(p.first_seq(), SeqNo(42));
        assert_eq!(p.send_time(), 1_000_000_000_000_000_000);
        assert_eq!(PacketRepr::parse(&p).unwrap(), heartbeat_repr());
    }

    #[test]
    fn emit_matches_fixture() {
        let mut buf = [0u8; 40];
        heartbeat_repr().emit_bare(&mut buf);
        assert_eq!(&buf[..36], &HEARTBEAT_BYTES[..36]);
        Packet::new_checked(&buf[..]).unwrap().verify_crc().unwrap();
    }

    #[test]
    fn impossible_lengths() {
        assert!(matches!(
            Packet::new_checked(&HEARTBEAT_BYTES[..39]),
            Err(DecodeError::Truncated { need: 40, have: 39 })
        ));
        let mut b = HEARTBEAT_BYTES;
        b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Packet::new_checked(&b[..]), Err(DecodeError::Malformed(_))));
        assert!(frame_len(&b).is_err());
        b[32..36].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(Packet::new_checked(&b[..]), Err(DecodeError::Truncated { .. })));
        assert_eq!(frame_len(&b), Ok(Some(48)));
        assert_eq!(frame_len(&b[..10]), Ok(None));
        assert!(frame_len(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn bad_crc_detected() {
        let mut buf = [0u8; 40];
        heartbeat_repr().emit_bare(&mut buf);
        buf[20] ^= 1;
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(matches!(PacketRepr::parse(&p), Err(DecodeError::BadCrc { .. })));
    }
}
