//! Optional packet authentication: a keyed MAC over every packet
//! (docs/PROTOCOL.md § 12).
//!
//! With a key configured, a sender seals each packet: it sets `flags` bit 3
//! ([`FLAG_MAC`]), appends a 16-byte tag to the payload (`payload_len` grows
//! by [`TAG_LEN`]) and refills the CRC. The tag is the first 16 bytes of the
//! BLAKE3 keyed hash (32-byte key) of the header bytes `0..36` (as sent: with
//! bit 3 set and the grown `payload_len`; the CRC field is not covered)
//! followed by the payload before the tag. A receiver with the key verifies
//! the CRC, then the tag (in constant time), and strips the tag before
//! handing the packet on: everything above sees exactly the packet that was
//! sealed. Without a key nothing changes on the wire.
//!
//! ```
//! use tickwire_core::wire::auth::{AuthKey, open, seal, TAG_LEN};
//! use tickwire_core::wire::{HEADER_LEN, PacketKind, PacketRepr};
//! use tickwire_core::SeqNo;
//!
//! let key = AuthKey::new([7; 32]);
//! let mut buf = [0u8; HEADER_LEN + TAG_LEN];
//! let repr = PacketRepr { kind: PacketKind::Heartbeat, flags: 0, epoch: 1, first_seq: SeqNo(5),
//!                         count: 0, send_time: 0, payload_len: 0 };
//! let plain = repr.emit_bare(&mut buf);
//! let sealed = seal(&key, &mut buf, plain).unwrap();
//! assert_eq!(sealed, HEADER_LEN + TAG_LEN);
//! let mut out = [0u8; HEADER_LEN + TAG_LEN];
//! let n = open(&key, &buf[..sealed], &mut out).unwrap();
//! assert_eq!(n, HEADER_LEN);
//! // Another key, or one flipped bit, is refused.
//! assert!(open(&AuthKey::new([8; 32]), &buf[..sealed], &mut out).is_err());
//! ```

use std::fmt;

use super::{HEADER_LEN, MAX_PACKET_LEN, Packet};
use crate::wire::DecodeError;

/// `flags` bit 3: the last [`TAG_LEN`] bytes of the payload are a MAC.
pub const FLAG_MAC: u16 = 1 << 3;
/// Bytes of the tag: 128 bits, the usual truncation of a 256-bit MAC
/// (forging one takes 2^128 tries on average; a feed sees < 2^40 packets).
pub const TAG_LEN: usize = 16;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// Header bytes covered by the MAC (everything before the CRC field).
const COVERED_HEADER: usize = 36;

/// A 32-byte MAC key. Its `Debug` shows no key material.
#[derive(Clone)]
pub struct AuthKey([u8; KEY_LEN]);

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

/// Why key material was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Neither 32 raw bytes nor 64 hex digits.
    #[error(
        "a key is 32 raw bytes or 64 hex digits; this holds {0} bytes{hint}",
        hint = if *.0 == 0 { " (empty)" } else { "" }
    )]
    Length(usize),
    /// 64 characters, but not all hex digits.
    #[error("a 64-character key must be hex digits (0-9, a-f); found {0:?}")]
    BadHex(char),
}

impl AuthKey {
    /// A key from its bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> AuthKey {
        AuthKey(bytes)
    }

    /// A key from the contents of a key file: exactly 32 raw bytes, or 64 hex
    /// digits (either case) optionally surrounded by whitespace (a newline).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<AuthKey, KeyError> {
        if bytes.len() == KEY_LEN {
            let mut k = [0u8; KEY_LEN];
            k.copy_from_slice(bytes);
            return Ok(AuthKey(k));
        }
        let text = bytes.trim_ascii();
        if text.len() != 2 * KEY_LEN {
            return Err(KeyError::Length(bytes.len()));
        }
        let digit = |c: u8| -> Result<u8, KeyError> {
            (c as char).to_digit(16).map(|d| d as u8).ok_or(KeyError::BadHex(c as char))
        };
        let mut k = [0u8; KEY_LEN];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            k[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(AuthKey(k))
    }
}

/// Why a packet was refused by [`verify`] / [`open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a well-framed packet with a valid CRC.
    #[error("not a valid packet: {0}")]
    Decode(DecodeError),
    /// No MAC (`flags` bit 3 clear, or a payload shorter than a tag).
    #[error("the packet carries no MAC")]
    Missing,
    /// The tag does not verify under this key.
    #[error("the packet's MAC does not verify")]
    Mismatch,
    /// The output buffer is too small, or sealing would exceed the largest packet.
    #[error("no room for the packet")]
    NoRoom,
}

/// The tag of the sealed packet `p` (`p` = header with bit 3 and the grown
/// `payload_len` in place, then the payload including the tag's room).
fn tag(key: &AuthKey, p: &[u8], payload_len: usize) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(&p[..COVERED_HEADER]);
    h.update(&p[HEADER_LEN..HEADER_LEN + payload_len - TAG_LEN]);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
    out
}

/// Seal the packet in `buf[..len]` (a complete packet, header and payload,
/// CRC not needed) in place; `buf` needs `len + TAG_LEN` bytes. Returns the
/// sealed length.
pub fn seal(key: &AuthKey, buf: &mut [u8], len: usize) -> Result<usize, AuthError> {
    let sealed = len + TAG_LEN;
    if len < HEADER_LEN || buf.len() < sealed || sealed > MAX_PACKET_LEN {
        return Err(AuthError::NoRoom);
    }
    let mut p = Packet::new_unchecked(&mut buf[..sealed]);
    let payload_len = sealed - HEADER_LEN;
    p.set_flags(p.flags() | FLAG_MAC);
    p.set_payload_len(payload_len);
    let t = tag(key, p.as_bytes(), payload_len);
    p.payload_mut()[payload_len - TAG_LEN..].copy_from_slice(&t);
    p.fill_crc();
    Ok(sealed)
}

/// Check `packet` (framing, CRC, then the MAC, in constant time); returns
/// its length without the tag on success.
pub fn verify(key: &AuthKey, packet: &[u8]) -> Result<usize, AuthError> {
    let p = Packet::new_checked(packet).map_err(AuthError::Decode)?;
    p.verify_crc().map_err(AuthError::Decode)?;
    let payload_len = p.payload_len();
    if p.flags() & FLAG_MAC == 0 || payload_len < TAG_LEN {
        return Err(AuthError::Missing);
    }
    let want = tag(key, packet, payload_len);
    let got = &p.payload()[payload_len - TAG_LEN..payload_len];
    // Constant time: the comparison does not reveal how many bytes matched.
    let diff = want.iter().zip(got).fold(0u8, |d, (a, b)| d | (a ^ b));
    if diff != 0 {
        return Err(AuthError::Mismatch);
    }
    Ok(HEADER_LEN + payload_len - TAG_LEN)
}

/// Verify `packet` and copy it without its tag into `out` (bit 3 cleared,
/// `payload_len` back to what was sealed, CRC refilled): the packet as it was
/// before [`seal`]. Returns its length.
pub fn open(key: &AuthKey, packet: &[u8], out: &mut [u8]) -> Result<usize, AuthError> {
    let n = verify(key, packet)?;
    if out.len() < n {
        return Err(AuthError::NoRoom);
    }
    out[..n].copy_from_slice(&packet[..n]);
    let mut p = Packet::new_unchecked(&mut out[..n]);
    p.set_flags(p.flags() & !FLAG_MAC);
    p.set_payload_len(n - HEADER_LEN);
    p.fill_crc();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeqNo;
    use crate::wire::{PacketKind, PacketRepr};

    fn packet(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN + payload.len() + TAG_LEN];
        let mut p = Packet::new_unchecked(&mut b[..HEADER_LEN + payload.len()]);
        PacketRepr {
            kind: PacketKind::Retransmission,
            flags: 0,
            epoch: 3,
            first_seq: SeqNo(10),
            count: 1,
            send_time: 99,
            payload_len: payload.len(),
        }
        .emit(&mut p);
        p.payload_mut().copy_from_slice(payload);
        p.fill_crc();
        b
    }

    #[test]
    fn seal_open_round_trip_and_every_bit_is_covered() {
        let key = AuthKey::new([0x42; 32]);
        let plain = packet(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let len = HEADER_LEN + 8;
        let mut sealed = plain.clone();
        let n = seal(&key, &mut sealed, len).unwrap();
        let mut out = vec![0u8; n];
        assert_eq!(open(&key, &sealed[..n], &mut out), Ok(len));
        assert_eq!(&out[..len], &plain[..len], "open gives back the packet that was sealed");
        // Flip each bit outside the CRC field: refused (CRC or MAC).
        for byte in (0..n).filter(|i| !(36..40).contains(i)) {
            for bit in 0..8 {
                let mut bad = sealed[..n].to_vec();
                bad[byte] ^= 1 << bit;
                assert!(open(&key, &bad, &mut out).is_err(), "byte {byte} bit {bit}");
                // With the CRC refilled (a forger's first step), the MAC still refuses it.
                if byte >= 4 && Packet::new_checked(&bad[..]).is_ok() {
                    Packet::new_unchecked(&mut bad[..]).fill_crc();
                    assert!(verify(&key, &bad).is_err(), "byte {byte} bit {bit}, CRC refilled");
                }
            }
        }
    }

    #[test]
    fn refusals() {
        let key = AuthKey::new([1; 32]);
        let plain = packet(&[9; 4]);
        let mut out = [0u8; 128];
        assert_eq!(verify(&key, &plain[..HEADER_LEN + 4]), Err(AuthError::Missing));
        assert!(matches!(verify(&key, &plain[..10]), Err(AuthError::Decode(_))));
        let mut s = plain.clone();
        let n = seal(&key, &mut s, HEADER_LEN + 4).unwrap();
        assert_eq!(verify(&AuthKey::new([2; 32]), &s[..n]), Err(AuthError::Mismatch));
        assert_eq!(open(&key, &s[..n], &mut out[..HEADER_LEN]), Err(AuthError::NoRoom));
        assert_eq!(seal(&key, &mut s[..n], n), Err(AuthError::NoRoom), "no room for the tag");
        assert_eq!(seal(&key, &mut [0u8; 20], 10), Err(AuthError::NoRoom));
    }

    #[test]
    fn key_files() {
        let raw = [0xabu8; 32];
        assert_eq!(AuthKey::from_file_bytes(&raw).unwrap().0, raw);
        let hex = "ab".repeat(32) + "\n";
        assert_eq!(AuthKey::from_file_bytes(hex.as_bytes()).unwrap().0, raw);
        assert_eq!(AuthKey::from_file_bytes(hex.to_uppercase().as_bytes()).unwrap().0, raw);
        assert_eq!(AuthKey::from_file_bytes(b"").err(), Some(KeyError::Length(0)));
        assert_eq!(AuthKey::from_file_bytes(&[0; 31]).err(), Some(KeyError::Length(31)));
        let bad = "zz".repeat(32);
        assert_eq!(AuthKey::from_file_bytes(bad.as_bytes()).err(), Some(KeyError::BadHex('z')));
        assert_eq!(format!("{:?}", AuthKey::new(raw)), "AuthKey(..)");
        assert!(KeyError::Length(0).to_string().contains("(empty)"));
    }
}
