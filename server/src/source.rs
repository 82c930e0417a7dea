//! Where the published messages come from: a [`MessageSource`]. The `server`
//! binary publishes the GBM [`Generator`]; a program publishes its own
//! messages with [`crate::publish`] and any source, e.g. [`FromIter`].

use tickwire_core::Message;
use tickwire_core::gbm::Generator;

/// The messages of one session, in sequence order: message `n` of the
/// source is published with sequence `n` (from 1).
///
/// [`crate::publish`] takes a message from the source when it falls due at
/// the configured rate ([`ServerConfig::rate`](crate::ServerConfig::rate); 0:
/// as fast as the transport takes them), stamps it with that due time, and
/// ends the session when the source returns `None`, the message limit or
/// the duration is reached, or the stop flag is set. Snapshots cover the
/// symbols `0..symbols()`, so every message's symbol must be below it.
///
/// `next_message` is called on the publishing thread, in its hot loop: it
/// should not block and, for the feed's latency, not allocate. The source is
/// pulled at the pace: it suits generated or recorded streams. A live
/// source whose messages come from elsewhere when they come (a gateway, a
/// channel from another thread) has no way yet to say "nothing now" and be
/// asked again later: it would have to block, which stalls the recovery
/// service with it.
///
/// ```
/// use tickwire_core::{Message, Quote};
/// use tickwire_server::MessageSource;
///
/// /// One symbol whose price climbs by a tick per message, ten messages.
/// struct Ramp(u32);
///
/// impl MessageSource for Ramp {
///     fn symbols(&self) -> u32 {
///         1
///     }
///     fn next_message(&mut self) -> Option<Message> {
///         (self.0 < 10).then(|| {
///             self.0 += 1;
///             let px = 1_000_000 + i64::from(self.0);
///             Message::Quote(Quote {
///                 symbol: 0,
///                 bid_px: px,
///                 ask_px: px + 1,
///                 bid_qty: 10,
///                 ask_qty: 10,
///                 exch_ts: 0,
///                 symbol_seq: u64::from(self.0),
///             })
///         })
///     }
/// }
/// let mut r = Ramp(0);
/// assert_eq!(std::iter::from_fn(|| r.next_message()).count(), 10);
/// ```
pub trait MessageSource {
    /// Size of the symbol universe (snapshot records `0..symbols()`).
    fn symbols(&self) -> u32;

    /// The next message, or `None` when the source is exhausted (the
    /// session ends).
    fn next_message(&mut self) -> Option<Message>;

    /// For a source with a pace of its own (a recorded session replayed at
    /// its recorded speed): when its next message falls due, as an offset
    /// from the session's start. The server then publishes each message at
    /// that instant (the configured rate still caps nothing: give it 0).
    /// `None` (the default): the server's rate paces the source.
    fn next_due(&self) -> Option<std::time::Duration> {
        None
    }

    /// What the start-up line says the source is.
    fn describe(&self) -> String {
        format!("a custom source of {} symbols", self.symbols())
    }
}

/// The simulated exchange: geometric Brownian motion, deterministic for its
/// seed (message `n` is a pure function of seed, symbols and `n`). Never
/// exhausted.
impl MessageSource for Generator {
    fn symbols(&self) -> u32 {
        self.config().symbols
    }

    #[inline]
    fn next_message(&mut self) -> Option<Message> {
        Some(Generator::next_message(self))
    }

    fn describe(&self) -> String {
        format!("GBM, {} symbols, seed {}", self.config().symbols, self.config().seed)
    }
}

/// Any iterator of messages as a source: the session ends with the iterator.
///
/// ```
/// use tickwire_core::{Message, Side, Trade};
/// use tickwire_server::{FromIter, MessageSource};
///
/// let trades = (0..3).map(|i| {
///     Message::Trade(Trade {
///         symbol: i % 2,
///         side: Side::Buy,
///         price: 100_000_000 + i64::from(i),
///         qty: 5,
///         exch_ts: 0,
///         symbol_seq: i / 2 + 1, // symbol i % 2's update number (PROTOCOL.md § 4.2)
///     })
/// });
/// let mut source = FromIter::new(2, trades);
/// assert_eq!(source.symbols(), 2);
/// assert!(source.next_message().is_some());
/// ```
#[derive(Clone, Debug)]
pub struct FromIter<I> {
    symbols: u32,
    iter: I,
}

impl<I: Iterator<Item = Message>> FromIter<I> {
    /// The messages of `iter`, over a universe of `symbols` symbols (every
    /// message's symbol below it).
    pub fn new(symbols: u32, iter: impl IntoIterator<IntoIter = I>) -> FromIter<I> {
        FromIter { symbols, iter: iter.into_iter() }
    }
}

impl<I: Iterator<Item = Message>> MessageSource for FromIter<I> {
    fn symbols(&self) -> u32 {
        self.symbols
    }

    fn next_message(&mut self) -> Option<Message> {
        self.iter.next()
    }
}
