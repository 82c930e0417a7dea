//! Snapshot payloads: a part header, then `count` symbol records.
//!
//! A snapshot is consistent at the packet header's `first_seq`: it is the state
//! after every message with a lower sequence. It may span several packets
//! (parts `0..parts`), all with the same `first_seq`.

use super::{DecodeError, Field, get_u16, get_u32, get_u64, set_u16, set_u32, set_u64};
use crate::msg::SymbolState;

mod field {
    use super::Field;
    // part header
    pub const PART: Field = 0..2;
    pub const PARTS: Field = 2..4;
    pub const SYMBOLS: Field = 4..8;
    // record
    pub const SYMBOL: Field = 0..4;
    pub const BID_QTY: Field = 4..8;
    pub const ASK_QTY: Field = 8..12;
    pub const LAST_QTY: Field = 12..16;
    pub const BID_PX: Field = 16..24;
    pub const ASK_PX: Field = 24..32;
    pub const LAST_PX: Field = 32..40;
    pub const UPDATES: Field = 40..48;
    pub const LAST_SEQ: Field = 48..56;
}

/// The part header at the start of a snapshot payload.
#[derive(Debug, Clone)]
pub struct SnapshotHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SnapshotHeader<T> {
    /// Length of the part header.
    pub const LEN: usize = 8;

    /// Wrap without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        SnapshotHeader { buffer }
    }
    /// Wrap and check.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }
    /// At least [`Self::LEN`] bytes.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let have = self.buffer.as_ref().len();
        if have < Self::LEN {
            return Err(DecodeError::Truncated {
                need: Self::LEN,
                have,
            });
        }
        Ok(())
    }
    /// This part's index.
    pub fn part(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PART.start)
    }
    /// Number of parts in the snapshot.
    pub fn parts(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PARTS.start)
    }
    /// Number of symbols in the whole snapshot.
    pub fn symbols(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SYMBOLS.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SnapshotHeader<T> {
    /// Write the part header.
    pub fn emit(&mut self, part: u16, parts: u16, symbols: u32) {
        let b = self.buffer.as_mut();
        set_u16(b, field::PART.start, part);
        set_u16(b, field::PARTS.start, parts);
        set_u32(b, field::SYMBOLS.start, symbols);
    }
}

/// A view of one symbol record.
#[derive(Debug, Clone)]
pub struct SnapshotRecord<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SnapshotRecord<T> {
    /// Length of a record.
    pub const LEN: usize = 56;

    /// Wrap without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        SnapshotRecord { buffer }
    }
    /// Wrap and check.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let r = Self::new_unchecked(buffer);
        r.check_len()?;
        Ok(r)
    }
    /// At least [`Self::LEN`] bytes.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let have = self.buffer.as_ref().len();
        if have < Self::LEN {
            return Err(DecodeError::Truncated {
                need: Self::LEN,
                have,
            });
        }
        Ok(())
    }
    /// The record as a [`SymbolState`].
    pub fn state(&self) -> SymbolState {
        let b = self.buffer.as_ref();
        SymbolState {
            symbol: get_u32(b, field::SYMBOL.start),
            bid_qty: get_u32(b, field::BID_QTY.start),
            ask_qty: get_u32(b, field::ASK_QTY.start),
            last_qty: get_u32(b, field::LAST_QTY.start),
            bid_px: get_u64(b, field::BID_PX.start) as i64,
            ask_px: get_u64(b, field::ASK_PX.start) as i64,
            last_px: get_u64(b, field::LAST_PX.start) as i64,
            updates: get_u64(b, field::UPDATES.start),
            last_seq: get_u64(b, field::LAST_SEQ.start),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SnapshotRecord<T> {
    /// Write `s`.
    pub fn emit(&mut self, s: &SymbolState) {
        let b = self.buffer.as_mut();
        set_u32(b, field::SYMBOL.start, s.symbol);
        set_u32(b, field::BID_QTY.start, s.bid_qty);
        set_u32(b, field::ASK_QTY.start, s.ask_qty);
        set_u32(b, field::LAST_QTY.start, s.last_qty);
        set_u64(b, field::BID_PX.start, s.bid_px as u64);
        set_u64(b, field::ASK_PX.start, s.ask_px as u64);
        set_u64(b, field::LAST_PX.start, s.last_px as u64);
        set_u64(b, field::UPDATES.start, s.updates);
        set_u64(b, field::LAST_SEQ.start, s.last_seq);
    }
}

/// Write `s` at the start of `buf` (which must hold [`SnapshotRecord::LEN`] bytes).
pub fn emit_record(s: &SymbolState, buf: &mut [u8]) {
    SnapshotRecord::new_unchecked(&mut buf[..SnapshotRecord::<&[u8]>::LEN]).emit(s)
}

/// Read the record at the start of `buf`.
pub fn parse_record(buf: &[u8]) -> Result<SymbolState, DecodeError> {
    Ok(SnapshotRecord::new_checked(buf)?.state())
}

/// A parsed snapshot part: header values and a validated record area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRepr<'a> {
    /// This part's index.
    pub part: u16,
    /// Number of parts.
    pub parts: u16,
    /// Symbols in the whole snapshot.
    pub symbols: u32,
    records: &'a [u8],
}

impl<'a> SnapshotRepr<'a> {
    /// Parse a snapshot payload carrying `count` records. The payload must be
    /// exactly the part header plus `count` records, and `part < parts`.
    pub fn parse(payload: &'a [u8], count: u16) -> Result<SnapshotRepr<'a>, DecodeError> {
        let h = SnapshotHeader::new_checked(payload)?;
        let need = SnapshotHeader::<&[u8]>::LEN + count as usize * SnapshotRecord::<&[u8]>::LEN;
        if payload.len() != need {
            return Err(DecodeError::Malformed(
                "snapshot payload disagrees with its count",
            ));
        }
        if h.parts() == 0 || h.part() >= h.parts() {
            return Err(DecodeError::Malformed("snapshot part index out of range"));
        }
        Ok(SnapshotRepr {
            part: h.part(),
            parts: h.parts(),
            symbols: h.symbols(),
            records: &payload[SnapshotHeader::<&[u8]>::LEN..],
        })
    }

    /// The records of this part.
    pub fn records(&self) -> impl Iterator<Item = SymbolState> + 'a {
        self.records
            .chunks_exact(SnapshotRecord::<&[u8]>::LEN)
            .map(|c| SnapshotRecord::new_unchecked(c).state())
    }

    /// Payload bytes for a part carrying `count` records.
    pub const fn buffer_len(count: usize) -> usize {
        SnapshotHeader::<&[u8]>::LEN + count * SnapshotRecord::<&[u8]>::LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let s = SymbolState {
            symbol: 9,
            bid_px: 1,
            ask_px: 2,
            bid_qty: 3,
            ask_qty: 4,
            last_px: -5,
            last_qty: 6,
            updates: 7,
            last_seq: 8,
        };
        let mut buf = [0u8; 56];
        emit_record(&s, &mut buf);
        assert_eq!(parse_record(&buf).unwrap(), s);
        assert!(parse_record(&buf[..55]).is_err());
    }

    #[test]
    fn part_checks() {
        let mut p = vec![0u8; SnapshotRepr::buffer_len(1)];
        SnapshotHeader::new_unchecked(&mut p[..]).emit(0, 1, 1);
        assert!(SnapshotRepr::parse(&p, 1).is_ok());
        assert!(SnapshotRepr::parse(&p, 2).is_err());
        SnapshotHeader::new_unchecked(&mut p[..]).emit(1, 1, 1);
        assert!(SnapshotRepr::parse(&p, 1).is_err());
        SnapshotHeader::new_unchecked(&mut p[..]).emit(0, 0, 1);
        assert!(SnapshotRepr::parse(&p, 1).is_err());
        assert!(SnapshotRepr::parse(&p[..7], 0).is_err());
    }
}
