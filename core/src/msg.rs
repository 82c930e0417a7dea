//! Plain representations of feed messages: what the generator produces, the
//! publisher encodes, the client delivers and the cache stores. The byte layout
//! lives in [`crate::wire`]; these types carry no bytes.

/// Prices are fixed-point integers: `price_units / PRICE_SCALE` currency units.
/// 10^-4 resolution, as NASDAQ ITCH; an `i64` covers any realistic price.
pub const PRICE_SCALE: i64 = 10_000;

/// A symbol's index in the session's universe (`0..symbols`).
pub type SymbolId = u32;

/// Aggressor side of a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// A buyer lifted the offer.
    Buy,
    /// A seller hit the bid.
    Sell,
    /// A side value this version does not know (kept so parsing loses nothing).
    Unknown(u8),
}

impl Side {
    /// The wire byte for this side.
    pub const fn to_byte(self) -> u8 {
        match self {
            Side::Buy => 1,
            Side::Sell => 2,
            Side::Unknown(b) => b,
        }
    }

    /// The side for a wire byte.
    pub const fn from_byte(b: u8) -> Side {
        match b {
            1 => Side::Buy,
            2 => Side::Sell,
            b => Side::Unknown(b),
        }
    }
}

/// Top-of-book quote for one symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quote {
    /// Symbol index.
    pub symbol: SymbolId,
    /// Best bid, in `1/PRICE_SCALE` units.
    pub bid_px: i64,
    /// Best ask, in `1/PRICE_SCALE` units.
    pub ask_px: i64,
    /// Size at the bid.
    pub bid_qty: u32,
    /// Size at the ask.
    pub ask_qty: u32,
    /// Simulated exchange time of the event, ns since the session started.
    pub exch_ts: u64,
    /// Per-symbol update number (1 for the symbol's first message, quote or trade).
    pub symbol_seq: u64,
}

/// A trade print for one symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Trade {
    /// Symbol index.
    pub symbol: SymbolId,
    /// Aggressor side.
    pub side: Side,
    /// Trade price, in `1/PRICE_SCALE` units.
    pub price: i64,
    /// Traded quantity.
    pub qty: u32,
    /// Simulated exchange time of the event, ns since the session started.
    pub exch_ts: u64,
    /// The symbol's update number (as [`Quote::symbol_seq`], which counts
    /// quotes and trades), truncated to its low 32 bits; 0 when the publisher
    /// does not carry it (a publisher that predates the field, which wrote
    /// these bytes as reserved, zero; the protocol version is 1 either way).
    /// A receiver compares it modulo 2³²: a wrap needs 2³² updates of one
    /// symbol inside one hole. `docs/PROTOCOL.md` § 4.2.
    pub symbol_seq: u32,
}

impl Trade {
    /// The low 32 bits of a symbol's update number, as a Trade carries it.
    /// At the 2³²-th update (and every 2³² after) this is 0, which reads as
    /// "not carried": that Trade waits for the sequence order.
    pub const fn wire_symbol_seq(updates: u64) -> u32 {
        updates as u32
    }
}

/// One sequenced feed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// A quote update.
    Quote(Quote),
    /// A trade.
    Trade(Trade),
    /// A message type this version does not know; skipped by its length, counted.
    Unknown {
        /// Its type byte.
        kind: u8,
    },
}

impl Message {
    /// The symbol the message is about, if it is a known type.
    pub const fn symbol(&self) -> Option<SymbolId> {
        match self {
            Message::Quote(q) => Some(q.symbol),
            Message::Trade(t) => Some(t.symbol),
            Message::Unknown { .. } => None,
        }
    }
}

/// The state of one symbol after applying messages up to some sequence: what a
/// snapshot carries per symbol and what the client's cache holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SymbolState {
    /// Symbol index.
    pub symbol: SymbolId,
    /// Best bid (0 before the first quote).
    pub bid_px: i64,
    /// Best ask (0 before the first quote).
    pub ask_px: i64,
    /// Size at the bid.
    pub bid_qty: u32,
    /// Size at the ask.
    pub ask_qty: u32,
    /// Last trade price (0 before the first trade).
    pub last_px: i64,
    /// Last trade quantity.
    pub last_qty: u32,
    /// Number of messages (quotes and trades) applied to this symbol.
    pub updates: u64,
    /// Sequence number of the last message applied to this symbol (0 if none).
    pub last_seq: u64,
}

impl SymbolState {
    /// An empty state for `symbol`.
    pub const fn empty(symbol: SymbolId) -> SymbolState {
        SymbolState {
            symbol,
            bid_px: 0,
            ask_px: 0,
            bid_qty: 0,
            ask_qty: 0,
            last_px: 0,
            last_qty: 0,
            updates: 0,
            last_seq: 0,
        }
    }

    /// Apply message `msg` carried at sequence `seq` (which must concern this symbol).
    pub fn apply(&mut self, seq: u64, msg: &Message) {
        match msg {
            Message::Quote(q) => {
                self.bid_px = q.bid_px;
                self.ask_px = q.ask_px;
                self.bid_qty = q.bid_qty;
                self.ask_qty = q.ask_qty;
            }
            Message::Trade(t) => {
                self.last_px = t.price;
                self.last_qty = t.qty;
            }
            Message::Unknown { .. } => return,
        }
        self.updates += 1;
        self.last_seq = seq;
    }
}

/// The state of a whole universe of symbols; index = symbol id. Used by the
/// publisher for snapshots and by tests as the oracle for caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Book {
    states: Vec<SymbolState>,
}

impl Book {
    /// A book of `symbols` empty states.
    pub fn new(symbols: u32) -> Book {
        Book { states: (0..symbols).map(SymbolState::empty).collect() }
    }

    /// Apply `msg` at `seq`; messages for symbols outside the universe are ignored
    /// and reported as `false`.
    pub fn apply(&mut self, seq: u64, msg: &Message) -> bool {
        match msg.symbol().and_then(|s| self.states.get_mut(s as usize)) {
            Some(st) => {
                st.apply(seq, msg);
                true
            }
            None => false,
        }
    }

    /// Replace one symbol's state (snapshot application). Out-of-range symbols are
    /// ignored and reported as `false`.
    pub fn set(&mut self, state: SymbolState) -> bool {
        match self.states.get_mut(state.symbol as usize) {
            Some(st) => {
                *st = state;
                true
            }
            None => false,
        }
    }

    /// All states, indexed by symbol.
    pub fn states(&self) -> &[SymbolState] {
        &self.states
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True when the universe is empty.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The book as text, one line per symbol that has seen a message:
    /// `symbol bid_px ask_px bid_qty ask_qty last_px last_qty updates last_seq`.
    /// Server and client write this format so tests can compare final states.
    pub fn write_text(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        for s in self.states.iter().filter(|s| s.updates > 0) {
            writeln!(
                out,
                "{} {} {} {} {} {} {} {} {}",
                s.symbol,
                s.bid_px,
                s.ask_px,
                s.bid_qty,
                s.ask_qty,
                s.last_px,
                s.last_qty,
                s.updates,
                s.last_seq
            )?;
        }
        Ok(())
    }
}
