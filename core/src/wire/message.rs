//! Sequenced messages inside Data and Retransmission payloads.
//!
//! Every message starts with the same 4 bytes: type (u8), flags (u8), length
//! (u16, the whole message including these 4 bytes). A receiver skips a type it
//! does not know by its length, so new types can be added without breaking old
//! clients.

use super::{DecodeError, Field, get_u16, get_u32, get_u64, set_u16, set_u32, set_u64};
use crate::msg::{Message, Quote as QuoteRepr, Side, Trade as TradeRepr};

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const FLAGS: usize = 1;
    pub const LEN: Field = 2..4;
    pub const SYMBOL: Field = 4..8;
    // Quote
    pub const Q_BID_PX: Field = 8..16;
    pub const Q_ASK_PX: Field = 16..24;
    pub const Q_BID_QTY: Field = 24..28;
    pub const Q_ASK_QTY: Field = 28..32;
    pub const Q_EXCH_TS: Field = 32..40;
    pub const Q_SYMBOL_SEQ: Field = 40..48;
    // Trade (FLAGS carries the aggressor side)
    pub const T_PRICE: Field = 8..16;
    pub const T_QTY: Field = 16..20;
    pub const T_SYMBOL_SEQ: Field = 20..24;
    pub const T_EXCH_TS: Field = 24..32;
}

/// Bytes every message starts with.
pub const PREFIX_LEN: usize = 4;

/// Message type bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `'Q'`, 48 bytes.
    Quote,
    /// `'T'`, 32 bytes.
    Trade,
    /// Anything else.
    Unknown(u8),
}

impl MessageKind {
    /// Wire byte.
    pub const fn to_byte(self) -> u8 {
        match self {
            MessageKind::Quote => b'Q',
            MessageKind::Trade => b'T',
            MessageKind::Unknown(b) => b,
        }
    }
    /// Kind for a wire byte.
    pub const fn from_byte(b: u8) -> MessageKind {
        match b {
            b'Q' => MessageKind::Quote,
            b'T' => MessageKind::Trade,
            b => MessageKind::Unknown(b),
        }
    }
    /// Length of a known kind's message; `None` for unknown kinds.
    pub const fn fixed_len(self) -> Option<usize> {
        match self {
            MessageKind::Quote => Some(Quote::<&[u8]>::LEN),
            MessageKind::Trade => Some(Trade::<&[u8]>::LEN),
            MessageKind::Unknown(_) => None,
        }
    }
}

/// A view of a Quote message.
#[derive(Debug, Clone)]
pub struct Quote<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Quote<T> {
    /// Length of a Quote on the wire.
    pub const LEN: usize = 48;

    /// Wrap without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Quote { buffer }
    }
    /// Wrap and check.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let q = Self::new_unchecked(buffer);
        q.check_len()?;
        Ok(q)
    }
    /// At least [`Self::LEN`] bytes, and the length field says exactly that.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let b = self.buffer.as_ref();
        if b.len() < Self::LEN {
            return Err(DecodeError::Truncated { need: Self::LEN, have: b.len() });
        }
        if get_u16(b, field::LEN.start) as usize != Self::LEN {
            return Err(DecodeError::Malformed("quote length field is not 48"));
        }
        Ok(())
    }
    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Symbol.
    pub fn symbol(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SYMBOL.start)
    }
    /// Bid price.
    pub fn bid_px(&self) -> i64 {
        get_u64(self.buffer.as_ref(), field::Q_BID_PX.start) as i64
    }
    /// Ask price.
    pub fn ask_px(&self) -> i64 {
        get_u64(self.buffer.as_ref(), field::Q_ASK_PX.start) as i64
    }
    /// Bid size.
    pub fn bid_qty(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::Q_BID_QTY.start)
    }
    /// Ask size.
    pub fn ask_qty(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::Q_ASK_QTY.start)
    }
    /// Exchange time.
    pub fn exch_ts(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::Q_EXCH_TS.start)
    }
    /// Per-symbol update number.
    pub fn symbol_seq(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::Q_SYMBOL_SEQ.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Quote<T> {
    /// Write every field of `q`.
    pub fn emit(&mut self, q: &QuoteRepr) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = b'Q';
        b[field::FLAGS] = 0;
        set_u16(b, field::LEN.start, Self::LEN as u16);
        set_u32(b, field::SYMBOL.start, q.symbol);
        set_u64(b, field::Q_BID_PX.start, q.bid_px as u64);
        set_u64(b, field::Q_ASK_PX.start, q.ask_px as u64);
        set_u32(b, field::Q_BID_QTY.start, q.bid_qty);
        set_u32(b, field::Q_ASK_QTY.start, q.ask_qty);
        set_u64(b, field::Q_EXCH_TS.start, q.exch_ts);
        set_u64(b, field::Q_SYMBOL_SEQ.start, q.symbol_seq);
    }
}

/// A view of a Trade message.
#[derive(Debug, Clone)]
pub struct Trade<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Trade<T> {
    /// Length of a Trade on the wire.
    pub const LEN: usize = 32;

    /// Wrap without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Trade { buffer }
    }
    /// Wrap and check.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }
    /// At least [`Self::LEN`] bytes, and the length field says exactly that.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let b = self.buffer.as_ref();
        if b.len() < Self::LEN {
            return Err(DecodeError::Truncated { need: Self::LEN, have: b.len() });
        }
        if get_u16(b, field::LEN.start) as usize != Self::LEN {
            return Err(DecodeError::Malformed("trade length field is not 32"));
        }
        Ok(())
    }
    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Symbol.
    pub fn symbol(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SYMBOL.start)
    }
    /// Aggressor side.
    pub fn side(&self) -> Side {
        Side::from_byte(self.buffer.as_ref()[field::FLAGS])
    }
    /// Price.
    pub fn price(&self) -> i64 {
        get_u64(self.buffer.as_ref(), field::T_PRICE.start) as i64
    }
    /// Quantity.
    pub fn qty(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::T_QTY.start)
    }
    /// Exchange time.
    pub fn exch_ts(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::T_EXCH_TS.start)
    }
    /// The symbol's update number, low 32 bits (0: not carried).
    pub fn symbol_seq(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::T_SYMBOL_SEQ.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Trade<T> {
    /// Write every field of `t`.
    pub fn emit(&mut self, t: &TradeRepr) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = b'T';
        b[field::FLAGS] = t.side.to_byte();
        set_u16(b, field::LEN.start, Self::LEN as u16);
        set_u32(b, field::SYMBOL.start, t.symbol);
        set_u64(b, field::T_PRICE.start, t.price as u64);
        set_u32(b, field::T_QTY.start, t.qty);
        set_u32(b, field::T_SYMBOL_SEQ.start, t.symbol_seq);
        set_u64(b, field::T_EXCH_TS.start, t.exch_ts);
    }
}

/// Bytes `msg` takes on the wire. Unknown messages cannot be emitted (length 0).
pub const fn message_len(msg: &Message) -> usize {
    match msg {
        Message::Quote(_) => Quote::<&[u8]>::LEN,
        Message::Trade(_) => Trade::<&[u8]>::LEN,
        Message::Unknown { .. } => 0,
    }
}

/// Emit `msg` at the start of `buf`; returns the bytes written, or `None` if it
/// does not fit (or is `Unknown`, which has no encoding).
pub fn emit_message(msg: &Message, buf: &mut [u8]) -> Option<usize> {
    let len = message_len(msg);
    if len == 0 || buf.len() < len {
        return None;
    }
    match msg {
        Message::Quote(q) => Quote::new_unchecked(&mut buf[..len]).emit(q),
        Message::Trade(t) => Trade::new_unchecked(&mut buf[..len]).emit(t),
        Message::Unknown { .. } => return None,
    }
    Some(len)
}

/// Parse the message at the start of `buf`; returns it and its length on the wire.
/// An unknown type is returned as [`Message::Unknown`] and skipped by its length.
pub fn parse_message(buf: &[u8]) -> Result<(Message, usize), DecodeError> {
    if buf.len() < PREFIX_LEN {
        return Err(DecodeError::Truncated { need: PREFIX_LEN, have: buf.len() });
    }
    let len = get_u16(buf, field::LEN.start) as usize;
    if len < PREFIX_LEN {
        return Err(DecodeError::Malformed("message length below its 4-byte prefix"));
    }
    if buf.len() < len {
        return Err(DecodeError::Truncated { need: len, have: buf.len() });
    }
    let kind = MessageKind::from_byte(buf[field::TYPE]);
    if let Some(fixed) = kind.fixed_len()
        && fixed != len
    {
        return Err(DecodeError::Malformed("message length disagrees with its type"));
    }
    let msg = match kind {
        MessageKind::Quote => {
            let q = Quote::new_checked(&buf[..len])?;
            Message::Quote(QuoteRepr {
                symbol: q.symbol(),
                bid_px: q.bid_px(),
                ask_px: q.ask_px(),
                bid_qty: q.bid_qty(),
                ask_qty: q.ask_qty(),
                exch_ts: q.exch_ts(),
                symbol_seq: q.symbol_seq(),
            })
        }
        MessageKind::Trade => {
            let t = Trade::new_checked(&buf[..len])?;
            Message::Trade(TradeRepr {
                symbol: t.symbol(),
                side: t.side(),
                price: t.price(),
                qty: t.qty(),
                exch_ts: t.exch_ts(),
                symbol_seq: t.symbol_seq(),
            })
        }
        MessageKind::Unknown(kind) => Message::Unknown { kind },
    };
    Ok((msg, len))
}

/// Iterates the messages of a Data or Retransmission payload. Yields exactly
/// `count` items; if the payload ends early, or bytes remain after `count`
/// messages, it yields one `Err` and stops. Callers that must not deliver half
/// a packet validate first with [`MessageIter::validate`].
#[derive(Debug, Clone)]
pub struct MessageIter<'a> {
    rest: &'a [u8],
    remaining: u16,
    failed: bool,
}

impl<'a> MessageIter<'a> {
    /// Iterate `count` messages in `payload`.
    pub fn new(payload: &'a [u8], count: u16) -> Self {
        MessageIter { rest: payload, remaining: count, failed: false }
    }

    /// Check the whole payload parses into exactly `count` messages.
    pub fn validate(payload: &'a [u8], count: u16) -> Result<(), DecodeError> {
        for m in MessageIter::new(payload, count) {
            m?;
        }
        Ok(())
    }
}

impl Iterator for MessageIter<'_> {
    type Item = Result<Message, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if !self.rest.is_empty() {
                self.failed = true;
                return Some(Err(DecodeError::Malformed("bytes after the last message")));
            }
            return None;
        }
        match parse_message(self.rest) {
            Ok((m, len)) => {
                self.rest = &self.rest[len..];
                self.remaining -= 1;
                Some(Ok(m))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static QUOTE_BYTES: [u8; 48] = [
        0x51, 0x00, 0x30, 0x00, 0x07, 0x00, 0x00, 0x00, // 'Q', flags, len 48, symbol 7
        0x10, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // bid 10000
        0x74, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ask 10100
        0x64, 0x00, 0x00, 0x00, 0xc8, 0x00, 0x00, 0x00, // bid qty 100, ask qty 200
        0xe8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exch_ts 1000
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // symbol_seq 5
    ];

    static TRADE_BYTES: [u8; 32] = [
        0x54, 0x02, 0x20, 0x00, 0x03, 0x00, 0x00, 0x00, // 'T', sell, len 32, symbol 3
        0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // price -10
        0x2a, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, // qty 42, symbol_seq 9
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exch_ts 1
    ];

    fn quote() -> Message {
        Message::Quote(QuoteRepr {
            symbol: 7,
            bid_px: 10_000,
            ask_px: 10_100,
            bid_qty: 100,
            ask_qty: 200,
            exch_ts: 1000,
            symbol_seq: 5,
        })
    }

    fn trade() -> Message {
        Message::Trade(TradeRepr {
            symbol: 3,
            side: Side::Sell,
            price: -10,
            qty: 42,
            exch_ts: 1,
            symbol_seq: 9,
        })
    }

    #[test]
    fn parse_fixtures() {
        assert_eq!(parse_message(&QUOTE_BYTES).unwrap(), (quote(), 48));
        assert_eq!(parse_message(&TRADE_BYTES).unwrap(), (trade(), 32));
    }

    #[test]
    fn emit_fixtures() {
        let mut buf = [0u8; 48];
        assert_eq!(emit_message(&quote(), &mut buf), Some(48));
        assert_eq!(buf, QUOTE_BYTES);
        let mut buf = [0u8; 32];
        assert_eq!(emit_message(&trade(), &mut buf), Some(32));
        assert_eq!(buf, TRADE_BYTES);
        assert_eq!(emit_message(&quote(), &mut [0u8; 47]), None);
    }

    #[test]
    fn unknown_is_skipped_by_length() {
        let mut buf = vec![b'Z', 0, 6, 0, 0xaa, 0xbb];
        buf.extend_from_slice(&TRADE_BYTES);
        let msgs: Vec<_> = MessageIter::new(&buf, 2).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs, vec![Message::Unknown { kind: b'Z' }, trade()]);
    }

    #[test]
    fn impossible_lengths() {
        assert!(parse_message(&QUOTE_BYTES[..3]).is_err());
        assert!(parse_message(&QUOTE_BYTES[..47]).is_err());
        let mut b = QUOTE_BYTES;
        b[2] = 2; // length below the prefix
        assert!(matches!(parse_message(&b), Err(DecodeError::Malformed(_))));
        b[2] = 32; // a quote claiming 32 bytes
        assert!(matches!(parse_message(&b), Err(DecodeError::Malformed(_))));
        // count disagrees with the payload
        assert!(MessageIter::validate(&QUOTE_BYTES, 2).is_err());
        assert!(MessageIter::validate(&QUOTE_BYTES, 0).is_err());
        assert!(MessageIter::validate(&QUOTE_BYTES, 1).is_ok());
    }
}
