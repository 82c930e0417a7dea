//! The deterministic exchange simulator: per-symbol geometric Brownian motion
//! prices, quantised into top-of-book quotes and trades.
//!
//! Message `n` of a session is a pure function of ([`GbmConfig`], `n`): the
//! generator draws every random number from one [`Xoshiro256PlusPlus`] seeded with
//! `seed_from_u64`, a named algorithm whose output never changes (unlike `SmallRng`
//! or `StdRng`). Tests regenerate the stream with [`expected_stream`] and the
//! per-symbol state with [`expected_book`] and compare what a client delivered.
//!
//! ## The model
//!
//! * **Universe.** `symbols` symbols. Symbol `i` gets, from a setup RNG seeded
//!   with `seed`, an initial price drawn log-uniformly in
//!   `[min_price, max_price]`, an annualised volatility uniform in
//!   `[min_vol, max_vol]` and a spread of 1..=[`MAX_SPREAD_TICKS`] ticks.
//! * **Activity.** Each message picks its symbol from a Zipf-like law: symbol
//!   `i` has weight `1 / (i + 1)^zipf_exponent` (symbol 0 is the busiest). The
//!   law is precomputed as a Walker/Vose alias table, so a draw costs one
//!   random word, one multiply and one compare: O(1).
//! * **Quote or trade.** With probability `trade_ratio` the message is a trade,
//!   otherwise a quote.
//! * **Quote.** The symbol's mid takes one exact log-normal step
//!   `S ← S · exp((μ − σ²/2)·dt + σ·√dt·Z)`, `Z ~ N(0, 1)` (rand_distr's
//!   ziggurat [`StandardNormal`]), where `dt` is `step_secs` of trading time
//!   expressed in years and both terms are precomputed per symbol. The mid is
//!   rounded to the tick; bid and ask sit `spread` ticks apart around it (bid at
//!   least one tick); sizes are 1..=[`MAX_LOTS`] lots of [`LOT_SIZE`].
//! * **Trade.** At the current ask (aggressor [`Side::Buy`]) or bid
//!   ([`Side::Sell`]), with equal odds, for 1 lot up to the displayed size of
//!   that side. A trade does not move the mid.
//! * **Time.** Message `n` has `exch_ts = n · dt_ns`.
//!
//! Bit-for-bit reproducibility holds for one platform and libm (the mid uses
//! `f64::exp`); `tests/gbm_golden.rs` pins the stream so any change shows.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::msg::{Book, Message, PRICE_SCALE, Quote, Side, SymbolId, Trade};
use crate::seq::SeqNo;

/// Shares per lot: the US round lot.
pub const LOT_SIZE: u32 = 100;
/// Largest size, in lots, of one side of a quote. 50 lots (5 000 shares) is a
/// typical displayed top-of-book size for a liquid stock.
pub const MAX_LOTS: u32 = 50;
/// Widest spread, in ticks, a symbol may be given. Liquid names quote one to a
/// few ticks wide; three keeps the simulated books tight but not all identical.
pub const MAX_SPREAD_TICKS: i64 = 3;
/// Trading seconds in a year (252 days of 6.5 hours): converts `step_secs` of
/// trading time into the year fraction that annualised vols and drifts expect.
pub const TRADING_SECONDS_PER_YEAR: f64 = 252.0 * 6.5 * 3600.0;
/// Largest universe accepted. The generator keeps ~80 bytes per symbol (state
/// plus alias table); a million symbols (~80 MB) is already beyond any real
/// exchange's listing, and snapshots of it take thousands of packets.
pub const MAX_SYMBOLS: u32 = 1 << 20;
/// Largest tick size accepted, in `1/PRICE_SCALE` units (1000 currency units).
/// Keeps `price_in_ticks × tick_size` far from `i64` overflow.
pub const MAX_TICK_SIZE: i64 = 1000 * PRICE_SCALE;
/// Largest price a quote can carry, in `1/PRICE_SCALE` units (10^11 currency
/// units). The mid is a GBM and could in principle wander without bound; its
/// quantised value is clamped here so `i64` arithmetic can never overflow.
pub const MAX_QUOTE_PX: i64 = 100_000_000_000 * PRICE_SCALE;

/// Offset mixed into the seed for the message stream, so the stream RNG and the
/// setup RNG (which draws the symbols' parameters) are independent.
const STREAM_SEED_SALT: u64 = 0x9E37_79B9_7F4A_7C15;

/// Configuration of a simulated session. Two generators built from equal
/// configs produce identical streams.
#[derive(Clone, Debug, PartialEq)]
pub struct GbmConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Number of symbols (`1..=MAX_SYMBOLS`).
    pub symbols: u32,
    /// Price tick in `1/PRICE_SCALE` units (`1..=MAX_TICK_SIZE`); 100 = 0.01.
    pub tick_size: i64,
    /// Share of messages that are trades, in `[0, 1]`.
    pub trade_ratio: f64,
    /// Zipf exponent of symbol activity (`>= 0`; 0 = uniform, 1 = classic Zipf).
    pub zipf_exponent: f64,
    /// Simulated nanoseconds between two messages: message `n` has `exch_ts = n · dt_ns`.
    pub dt_ns: u64,
    /// Annualised drift μ of every symbol.
    pub drift: f64,
    /// Trading time, in seconds, one quote update advances its symbol's GBM by.
    /// (A literal `dt_ns` step would move no price by a tick in a lifetime.)
    pub step_secs: f64,
    /// Lowest initial price, currency units (`> 0`).
    pub min_price: f64,
    /// Highest initial price, currency units (`>= min_price`).
    pub max_price: f64,
    /// Lowest annualised volatility (`>= 0`).
    pub min_vol: f64,
    /// Highest annualised volatility (`>= min_vol`).
    pub max_vol: f64,
}

impl Default for GbmConfig {
    /// Seed 7, 1000 symbols, tick 0.01, 20 % trades, Zipf 1, 5 µs between
    /// messages, no drift, one trading second per update, prices 10..500, vols
    /// 10 %..60 %.
    fn default() -> Self {
        GbmConfig {
            seed: 7,
            symbols: 1000,
            tick_size: 100,
            trade_ratio: 0.2,
            zipf_exponent: 1.0,
            dt_ns: 5_000,
            drift: 0.0,
            step_secs: 1.0,
            min_price: 10.0,
            max_price: 500.0,
            min_vol: 0.10,
            max_vol: 0.60,
        }
    }
}

/// Why a [`GbmConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum GbmError {
    /// `symbols` is 0 or above [`MAX_SYMBOLS`].
    #[error("symbols must be in 1..={MAX_SYMBOLS}, got {0}")]
    BadSymbols(u32),
    /// `tick_size` is below 1 or above [`MAX_TICK_SIZE`].
    #[error("tick_size must be in 1..={MAX_TICK_SIZE}, got {0}")]
    BadTickSize(i64),
    /// `trade_ratio` is outside `[0, 1]` (or NaN).
    #[error("trade_ratio must be in [0, 1], got {0}")]
    BadTradeRatio(f64),
    /// A floating-point parameter is NaN or infinite.
    #[error("{0} must be finite")]
    NotFinite(&'static str),
    /// `zipf_exponent` is negative.
    #[error("zipf_exponent must be >= 0, got {0}")]
    BadZipfExponent(f64),
    /// `step_secs` is negative.
    #[error("step_secs must be >= 0, got {0}")]
    BadStep(f64),
    /// The price range is empty or not positive.
    #[error("need 0 < min_price <= max_price, got [{0}, {1}]")]
    BadPriceRange(f64, f64),
    /// The volatility range is empty or negative.
    #[error("need 0 <= min_vol <= max_vol, got [{0}, {1}]")]
    BadVolRange(f64, f64),
}

impl GbmConfig {
    /// Check every parameter; [`Generator::new`] calls this.
    pub fn validate(&self) -> Result<(), GbmError> {
        if self.symbols == 0 || self.symbols > MAX_SYMBOLS {
            return Err(GbmError::BadSymbols(self.symbols));
        }
        if !(1..=MAX_TICK_SIZE).contains(&self.tick_size) {
            return Err(GbmError::BadTickSize(self.tick_size));
        }
        for (name, v) in [
            ("trade_ratio", self.trade_ratio),
            ("zipf_exponent", self.zipf_exponent),
            ("drift", self.drift),
            ("step_secs", self.step_secs),
            ("min_price", self.min_price),
            ("max_price", self.max_price),
            ("min_vol", self.min_vol),
            ("max_vol", self.max_vol),
        ] {
            if !v.is_finite() {
                return Err(GbmError::NotFinite(name));
            }
        }
        if !(0.0..=1.0).contains(&self.trade_ratio) {
            return Err(GbmError::BadTradeRatio(self.trade_ratio));
        }
        if self.zipf_exponent < 0.0 {
            return Err(GbmError::BadZipfExponent(self.zipf_exponent));
        }
        if self.step_secs < 0.0 {
            return Err(GbmError::BadStep(self.step_secs));
        }
        if !(self.min_price > 0.0 && self.min_price <= self.max_price) {
            return Err(GbmError::BadPriceRange(self.min_price, self.max_price));
        }
        if !(self.min_vol >= 0.0 && self.min_vol <= self.max_vol) {
            return Err(GbmError::BadVolRange(self.min_vol, self.max_vol));
        }
        Ok(())
    }
}

/// The fixed parameters the generator drew for one symbol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SymbolParams {
    /// Initial mid, in `1/PRICE_SCALE` units (not quantised).
    pub initial_mid: f64,
    /// Annualised volatility σ.
    pub vol: f64,
    /// Spread in ticks (`1..=MAX_SPREAD_TICKS`).
    pub spread_ticks: i64,
    /// Precomputed `(μ − σ²/2)·dt` of one step.
    pub drift_term: f64,
    /// Precomputed `σ·√dt` of one step.
    pub vol_term: f64,
}

/// One symbol's moving state. Kept small: the hot loop touches one per message.
#[derive(Clone, Copy, Debug)]
struct SymbolSim {
    /// Unquantised mid, `1/PRICE_SCALE` units.
    mid: f64,
    drift_term: f64,
    vol_term: f64,
    spread_ticks: i64,
    /// Highest mid in ticks ([`SymbolSim::max_ticks`]): fixed per symbol,
    /// kept so that a quote costs no integer division.
    max_ticks: i64,
    bid_px: i64,
    ask_px: i64,
    bid_qty: u32,
    ask_qty: u32,
    /// Messages (quotes and trades) generated for this symbol so far.
    updates: u64,
}

/// Walker/Vose alias table over `0..n`: one draw = one `u64`.
#[derive(Clone, Debug)]
struct AliasTable {
    /// Acceptance threshold of column `i`, scaled to `2^32`; values `>= 2^32`
    /// mean "always accept".
    accept: Vec<u64>,
    /// Where column `i` sends a rejected draw.
    alias: Vec<u32>,
}

impl AliasTable {
    /// Build from non-negative weights (at least one positive).
    fn new(weights: &[f64]) -> AliasTable {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut prob: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let mut small: Vec<u32> = Vec::with_capacity(n);
        let mut large: Vec<u32> = Vec::with_capacity(n);
        for (i, &p) in prob.iter().enumerate() {
            if p < 1.0 { small.push(i as u32) } else { large.push(i as u32) }
        }
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            alias[s as usize] = l;
            prob[l as usize] -= 1.0 - prob[s as usize];
            if prob[l as usize] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers (in either list, from rounding) accept always.
        for i in small.into_iter().chain(large) {
            prob[i as usize] = 1.0;
        }
        let scale = (1u64 << 32) as f64;
        let accept =
            prob.iter().map(|&p| if p >= 1.0 { 1u64 << 32 } else { (p * scale) as u64 }).collect();
        AliasTable { accept, alias }
    }

    /// Draw an index from one random word: the high half picks a column
    /// (multiply-shift, no division), the low half decides column or alias.
    #[inline]
    fn sample(&self, word: u64) -> usize {
        let n = self.accept.len() as u64;
        let col = (((word >> 32) * n) >> 32) as usize;
        if (word & 0xFFFF_FFFF) < self.accept[col] { col } else { self.alias[col] as usize }
    }
}

/// The exchange simulator. See the [module docs](self) for the model.
#[derive(Clone, Debug)]
pub struct Generator {
    cfg: GbmConfig,
    rng: Xoshiro256PlusPlus,
    symbols: Vec<SymbolSim>,
    params: Vec<SymbolParams>,
    activity: AliasTable,
    /// A trade when the top 53 bits of a word are below this (`trade_ratio · 2^53`).
    trade_threshold: u64,
    produced: u64,
}

/// A uniform `f64` in `[0, 1)` from the top 53 bits of a word.
#[inline]
fn unit_f64(word: u64) -> f64 {
    (word >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform integer in `1..=n` from 32 random bits (multiply-shift; the bias,
/// below `n / 2^32`, is irrelevant here).
#[inline]
fn one_to(bits: u32, n: u32) -> u32 {
    ((bits as u64 * n as u64) >> 32) as u32 + 1
}

impl Generator {
    /// Build a generator; fails if `cfg` does not [validate](GbmConfig::validate).
    pub fn new(cfg: GbmConfig) -> Result<Generator, GbmError> {
        cfg.validate()?;
        let mut setup = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let dt = cfg.step_secs / TRADING_SECONDS_PER_YEAR;
        let (ln_lo, ln_hi) = (cfg.min_price.ln(), cfg.max_price.ln());
        let n = cfg.symbols as usize;
        let mut params = Vec::with_capacity(n);
        let mut symbols = Vec::with_capacity(n);
        for _ in 0..n {
            let price = (ln_lo + (ln_hi - ln_lo) * unit_f64(setup.next_u64())).exp();
            let vol = cfg.min_vol + (cfg.max_vol - cfg.min_vol) * unit_f64(setup.next_u64());
            let sizes = setup.next_u64();
            let spread_ticks = i64::from(one_to(setup.next_u64() as u32, MAX_SPREAD_TICKS as u32));
            let p = SymbolParams {
                initial_mid: price * PRICE_SCALE as f64,
                vol,
                spread_ticks,
                drift_term: (cfg.drift - 0.5 * vol * vol) * dt,
                vol_term: vol * dt.sqrt(),
            };
            let mut s = SymbolSim {
                mid: p.initial_mid,
                drift_term: p.drift_term,
                vol_term: p.vol_term,
                spread_ticks,
                max_ticks: SymbolSim::max_ticks(cfg.tick_size, spread_ticks),
                bid_px: 0,
                ask_px: 0,
                bid_qty: one_to(sizes as u32, MAX_LOTS) * LOT_SIZE,
                ask_qty: one_to((sizes >> 32) as u32, MAX_LOTS) * LOT_SIZE,
                updates: 0,
            };
            s.requote(cfg.tick_size);
            params.push(p);
            symbols.push(s);
        }
        let weights: Vec<f64> = (0..n).map(|i| ((i + 1) as f64).powf(-cfg.zipf_exponent)).collect();
        let activity = AliasTable::new(&weights);
        let trade_threshold = (cfg.trade_ratio * (1u64 << 53) as f64) as u64;
        let rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ STREAM_SEED_SALT);
        Ok(Generator { cfg, rng, symbols, params, activity, trade_threshold, produced: 0 })
    }

    /// Generate the next message; its sequence is [`Self::produced`] after the
    /// call (the first message has sequence 1).
    #[inline]
    pub fn next_message(&mut self) -> Message {
        self.produced += 1;
        let seq = self.produced;
        let exch_ts = seq.wrapping_mul(self.cfg.dt_ns);
        let sym = self.activity.sample(self.rng.next_u64());
        let is_trade = (self.rng.next_u64() >> 11) < self.trade_threshold;
        let s = &mut self.symbols[sym];
        s.updates += 1;
        if is_trade {
            let word = self.rng.next_u64();
            let buy = word & 1 == 1;
            let (price, shown) = if buy { (s.ask_px, s.ask_qty) } else { (s.bid_px, s.bid_qty) };
            let qty = one_to((word >> 32) as u32, shown / LOT_SIZE) * LOT_SIZE;
            Message::Trade(Trade {
                symbol: sym as SymbolId,
                side: if buy { Side::Buy } else { Side::Sell },
                price,
                qty,
                exch_ts,
                symbol_seq: Trade::wire_symbol_seq(s.updates),
            })
        } else {
            let z: f64 = StandardNormal.sample(&mut self.rng);
            s.mid *= (s.drift_term + s.vol_term * z).exp();
            let sizes = self.rng.next_u64();
            s.bid_qty = one_to(sizes as u32, MAX_LOTS) * LOT_SIZE;
            s.ask_qty = one_to((sizes >> 32) as u32, MAX_LOTS) * LOT_SIZE;
            s.requote(self.cfg.tick_size);
            Message::Quote(Quote {
                symbol: sym as SymbolId,
                bid_px: s.bid_px,
                ask_px: s.ask_px,
                bid_qty: s.bid_qty,
                ask_qty: s.ask_qty,
                exch_ts,
                symbol_seq: s.updates,
            })
        }
    }

    /// Generate the next message with its sequence number.
    #[inline]
    pub fn next_sequenced(&mut self) -> (SeqNo, Message) {
        let m = self.next_message();
        (SeqNo(self.produced), m)
    }

    /// Fill `out` with the next `out.len()` messages.
    pub fn fill(&mut self, out: &mut [Message]) {
        for slot in out {
            *slot = self.next_message();
        }
    }

    /// Messages generated so far (= the sequence of the last one).
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The configuration this generator was built from.
    pub fn config(&self) -> &GbmConfig {
        &self.cfg
    }

    /// The fixed parameters drawn for `symbol`, if it is in the universe.
    pub fn symbol_params(&self, symbol: SymbolId) -> Option<&SymbolParams> {
        self.params.get(symbol as usize)
    }

    /// The current unquantised mid of `symbol`, in `1/PRICE_SCALE` units.
    pub fn mid(&self, symbol: SymbolId) -> Option<f64> {
        self.symbols.get(symbol as usize).map(|s| s.mid)
    }

    /// The probability that a message concerns `symbol` (from the Zipf law).
    /// Costs O(symbols): for tests and reports, not the hot path.
    pub fn activity_share(&self, symbol: SymbolId) -> Option<f64> {
        let n = self.cfg.symbols as usize;
        let i = symbol as usize;
        if i >= n {
            return None;
        }
        let w = |k: usize| ((k + 1) as f64).powf(-self.cfg.zipf_exponent);
        let total: f64 = (0..n).map(w).sum();
        Some(w(i) / total)
    }
}

/// `x.round() as i64`, bit for bit (half away from zero; NaN gives 0;
/// beyond the range of `i64` it saturates), without the call to libm's
/// `round` that x86-64's baseline (no SSE4.1 `roundsd`) compiles
/// `f64::round` to: that call was 4 % of a server at 10M msgs/s.
#[inline]
fn round_to_i64(x: f64) -> i64 {
    // 2^52: from there on every f64 is an integer, and `as` is exact (or
    // saturates); below it, `x - t` is exact.
    const INTEGRAL: f64 = 4_503_599_627_370_496.0;
    if x.is_nan() || x.abs() >= INTEGRAL {
        return x as i64;
    }
    let t = x as i64; // toward zero
    let frac = x - t as f64;
    // Without branches: which way a price rounds is a coin toss, and a
    // mispredicted branch costs more than the libm call it replaces.
    t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5)
}

impl SymbolSim {
    /// The clamp's upper bound for a mid in ticks: the ask (`spread_ticks`
    /// above the bid) stays at or below [`MAX_QUOTE_PX`]; at least 1.
    fn max_ticks(tick: i64, spread_ticks: i64) -> i64 {
        (MAX_QUOTE_PX / tick - spread_ticks).max(1)
    }

    /// Recompute bid/ask from the mid: round to the tick, keep the bid at least
    /// one tick and the ask `spread_ticks` above it, clamp below [`MAX_QUOTE_PX`].
    #[inline]
    fn requote(&mut self, tick: i64) {
        // `as` saturates (NaN -> 0), then the clamp bounds it.
        let mid_ticks = round_to_i64(self.mid / tick as f64).clamp(1, self.max_ticks);
        let bid_ticks = (mid_ticks - self.spread_ticks / 2).max(1);
        self.bid_px = bid_ticks * tick;
        self.ask_px = (bid_ticks + self.spread_ticks) * tick;
    }
}

/// An endless stream of `(sequence, message)`, starting at sequence 1.
impl Iterator for Generator {
    type Item = (SeqNo, Message);

    #[inline]
    fn next(&mut self) -> Option<(SeqNo, Message)> {
        Some(self.next_sequenced())
    }
}

/// The oracle used by tests: the first `n` messages of a session, as
/// `(SeqNo, Message)`.
///
/// # Panics
/// If `cfg` is invalid (see [`GbmConfig::validate`]): an oracle that silently
/// produced nothing would let tests pass vacuously.
pub fn expected_stream(cfg: &GbmConfig, n: u64) -> impl Iterator<Item = (SeqNo, Message)> {
    let generator = match Generator::new(cfg.clone()) {
        Ok(g) => g,
        Err(e) => panic!("expected_stream: invalid GbmConfig: {e}"),
    };
    generator.take(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The oracle's per-symbol state after `n` messages: a [`Book`] with every
/// message applied at its sequence.
///
/// # Panics
/// If `cfg` is invalid, as [`expected_stream`].
pub fn expected_book(cfg: &GbmConfig, n: u64) -> Book {
    let mut book = Book::new(cfg.symbols);
    for (seq, msg) in expected_stream(cfg, n) {
        book.apply(seq.0, &msg);
    }
    book
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_to_i64_is_round_as_i64_bit_for_bit() {
        let edge = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            9.3e18,
            -9.3e18,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
        ];
        for x in edge {
            assert_eq!(round_to_i64(x), x.round() as i64, "{x:e}");
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        for _ in 0..1_000_000 {
            // Every bit pattern (all exponents, NaNs included) and values
            // near the price range.
            let x = f64::from_bits(rng.next_u64());
            assert_eq!(round_to_i64(x), x.round() as i64, "{x:e}");
            let y = (rng.next_u64() >> 11) as f64 / 1024.0 - 1e12;
            assert_eq!(round_to_i64(y), y.round() as i64, "{y:e}");
            let h = (rng.next_u64() % 1_000_000) as f64 + 0.5;
            assert_eq!(round_to_i64(h), h.round() as i64, "{h:e}");
        }
    }
    #[test]
    fn config_validation_errors() {
        let ok = GbmConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut GbmConfig)| {
            let mut c = GbmConfig::default();
            f(&mut c);
            Generator::new(c).err()
        };
        assert_eq!(bad(|c| c.symbols = 0), Some(GbmError::BadSymbols(0)));
        assert_eq!(
            bad(|c| c.symbols = MAX_SYMBOLS + 1),
            Some(GbmError::BadSymbols(MAX_SYMBOLS + 1))
        );
        assert_eq!(bad(|c| c.tick_size = 0), Some(GbmError::BadTickSize(0)));
        assert_eq!(bad(|c| c.tick_size = -100), Some(GbmError::BadTickSize(-100)));
        assert_eq!(
            bad(|c| c.tick_size = MAX_TICK_SIZE + 1),
            Some(GbmError::BadTickSize(MAX_TICK_SIZE + 1))
        );
        assert_eq!(bad(|c| c.trade_ratio = 1.5), Some(GbmError::BadTradeRatio(1.5)));
        assert_eq!(bad(|c| c.trade_ratio = -0.1), Some(GbmError::BadTradeRatio(-0.1)));
        assert_eq!(bad(|c| c.trade_ratio = f64::NAN), Some(GbmError::NotFinite("trade_ratio")));
        assert_eq!(bad(|c| c.drift = f64::INFINITY), Some(GbmError::NotFinite("drift")));
        assert_eq!(bad(|c| c.max_vol = f64::NEG_INFINITY), Some(GbmError::NotFinite("max_vol")));
        assert_eq!(bad(|c| c.zipf_exponent = -1.0), Some(GbmError::BadZipfExponent(-1.0)));
        assert_eq!(bad(|c| c.step_secs = -1.0), Some(GbmError::BadStep(-1.0)));
        assert_eq!(bad(|c| c.min_price = 0.0), Some(GbmError::BadPriceRange(0.0, 500.0)));
        assert_eq!(bad(|c| c.min_price = 600.0), Some(GbmError::BadPriceRange(600.0, 500.0)));
        assert_eq!(bad(|c| c.min_vol = -0.1), Some(GbmError::BadVolRange(-0.1, 0.6)));
        assert_eq!(bad(|c| c.min_vol = 0.9), Some(GbmError::BadVolRange(0.9, 0.6)));
        // Edges that are valid.
        assert!(bad(|c| c.symbols = 1).is_none());
        assert!(bad(|c| c.trade_ratio = 0.0).is_none());
        assert!(bad(|c| c.trade_ratio = 1.0).is_none());
        assert!(bad(|c| c.zipf_exponent = 0.0).is_none());
        assert!(bad(|c| c.step_secs = 0.0).is_none());
        assert!(bad(|c| c.min_vol = 0.6).is_none());
    }

    /// The alias table's exact probabilities (summed over its columns) equal the
    /// normalised weights: the sampler draws the Zipf law, not an approximation.
    #[test]
    fn alias_table_is_exact() {
        for (n, s) in [(1usize, 1.0), (7, 1.0), (1000, 1.0), (1000, 0.0), (333, 1.7)] {
            let w: Vec<f64> = (0..n).map(|i| ((i + 1) as f64).powf(-s)).collect();
            let total: f64 = w.iter().sum();
            let t = AliasTable::new(&w);
            let mut p = vec![0.0f64; n];
            let scale = (1u64 << 32) as f64;
            for c in 0..n {
                let acc = (t.accept[c].min(1 << 32)) as f64 / scale;
                p[c] += acc / n as f64;
                p[t.alias[c] as usize] += (1.0 - acc) / n as f64;
            }
            for i in 0..n {
                assert!(
                    (p[i] - w[i] / total).abs() < 1e-8,
                    "n={n} s={s} i={i}: {} vs {}",
                    p[i],
                    w[i] / total
                );
            }
        }
    }

    #[test]
    fn alias_sample_covers_extremes() {
        let t = AliasTable::new(&[1.0, 1.0, 1.0, 1.0]);
        assert_eq!(t.sample(0), 0);
        assert_eq!(t.sample(u64::MAX), 3);
    }

    /// Every quote and trade obeys the model's invariants over a long run.
    #[test]
    fn quotes_and_trades_are_well_formed() {
        let cfg = GbmConfig::default();
        let mut g = Generator::new(cfg.clone()).unwrap();
        let n = cfg.symbols as usize;
        let mut last_quote: Vec<Option<Quote>> = vec![None; n];
        let mut updates = vec![0u64; n];
        let (mut quotes, mut trades) = (0u64, 0u64);
        for seq in 1..=200_000u64 {
            let m = g.next_message();
            assert_eq!(g.produced(), seq);
            let sym = m.symbol().unwrap() as usize;
            updates[sym] += 1;
            match m {
                Message::Quote(q) => {
                    quotes += 1;
                    assert_eq!(q.exch_ts, seq * cfg.dt_ns);
                    assert_eq!(q.symbol_seq, updates[sym]);
                    assert!(q.bid_px > 0 && q.bid_px < q.ask_px, "{q:?}");
                    assert_eq!(q.bid_px % cfg.tick_size, 0);
                    assert_eq!(q.ask_px % cfg.tick_size, 0);
                    let spread = g.symbol_params(q.symbol).unwrap().spread_ticks;
                    assert_eq!(q.ask_px - q.bid_px, spread * cfg.tick_size);
                    for qty in [q.bid_qty, q.ask_qty] {
                        assert_eq!(qty % LOT_SIZE, 0);
                        assert!((1..=MAX_LOTS).contains(&(qty / LOT_SIZE)));
                    }
                    last_quote[sym] = Some(q);
                }
                Message::Trade(t) => {
                    trades += 1;
                    assert_eq!(t.exch_ts, seq * cfg.dt_ns);
                    assert!(t.price > 0 && t.price % cfg.tick_size == 0);
                    assert_eq!(t.qty % LOT_SIZE, 0);
                    assert!(t.qty >= LOT_SIZE);
                    if let Some(q) = last_quote[sym] {
                        match t.side {
                            Side::Buy => assert!(t.price == q.ask_px && t.qty <= q.ask_qty),
                            Side::Sell => assert!(t.price == q.bid_px && t.qty <= q.bid_qty),
                            Side::Unknown(b) => panic!("unknown side {b}"),
                        }
                    }
                }
                Message::Unknown { kind } => panic!("generator produced unknown kind {kind}"),
            }
        }
        // 20 % trades: 40 000 expected, binomial sd ~179.
        assert!((trades as f64 - 40_000.0).abs() < 1_000.0, "trades {trades}");
        assert_eq!(quotes + trades, 200_000);
    }

    /// Log returns of the mid have the mean `(μ − σ²/2)dt` and variance `σ²dt`
    /// of the exact GBM step, and are normal (skew and excess kurtosis near 0).
    /// Seeded: the same numbers every run, tolerances are ~5 standard errors.
    #[test]
    fn gbm_log_returns_match_theory() {
        let (mu, sigma) = (0.05, 0.3);
        let cfg = GbmConfig {
            symbols: 1,
            trade_ratio: 0.0,
            drift: mu,
            step_secs: TRADING_SECONDS_PER_YEAR / 252.0, // one trading day per step
            min_vol: sigma,
            max_vol: sigma,
            ..GbmConfig::default()
        };
        let dt = 1.0 / 252.0;
        let mut g = Generator::new(cfg.clone()).unwrap();
        let p = *g.symbol_params(0).unwrap();
        assert!((p.drift_term - (mu - sigma * sigma / 2.0) * dt).abs() < 1e-15);
        assert!((p.vol_term - sigma * dt.sqrt()).abs() < 1e-15);
        let n = 200_000usize;
        let mut prev = g.mid(0).unwrap();
        assert_eq!(prev, p.initial_mid);
        let mut r = Vec::with_capacity(n);
        for _ in 0..n {
            g.next_message();
            let m = g.mid(0).unwrap();
            r.push((m / prev).ln());
            prev = m;
        }
        let nf = n as f64;
        let mean = r.iter().sum::<f64>() / nf;
        let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
        let sd = var.sqrt();
        let skew = r.iter().map(|x| ((x - mean) / sd).powi(3)).sum::<f64>() / nf;
        let kurt = r.iter().map(|x| ((x - mean) / sd).powi(4)).sum::<f64>() / nf - 3.0;
        let (m_th, v_th) = ((mu - sigma * sigma / 2.0) * dt, sigma * sigma * dt);
        let se_mean = (v_th / nf).sqrt();
        let se_var = v_th * (2.0 / (nf - 1.0)).sqrt();
        assert!((mean - m_th).abs() < 5.0 * se_mean, "mean {mean} vs {m_th} (se {se_mean})");
        assert!((var - v_th).abs() < 5.0 * se_var, "var {var} vs {v_th} (se {se_var})");
        assert!(skew.abs() < 5.0 * (6.0 / nf).sqrt(), "skew {skew}");
        assert!(kurt.abs() < 5.0 * (24.0 / nf).sqrt(), "excess kurtosis {kurt}");
    }

    /// Symbol activity follows the configured law: symbol 0's share matches the
    /// Zipf weight, and the busiest symbol dwarfs the median one.
    #[test]
    fn zipf_skew() {
        let cfg = GbmConfig::default();
        let g = Generator::new(cfg.clone()).unwrap();
        let n = 300_000u64;
        let mut counts = vec![0u64; cfg.symbols as usize];
        for (_, m) in g.take(n as usize) {
            counts[m.symbol().unwrap() as usize] += 1;
        }
        let g = Generator::new(cfg.clone()).unwrap();
        for sym in [0u32, 1, 9, 99] {
            let p = g.activity_share(sym).unwrap();
            let expect = p * n as f64;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            let got = counts[sym as usize] as f64;
            assert!((got - expect).abs() < 5.0 * sd, "symbol {sym}: {got} vs {expect}");
        }
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let top = *counts.iter().max().unwrap();
        assert_eq!(top, counts[0], "symbol 0 is the busiest");
        assert!(top > 50 * median.max(1), "top {top} median {median}");

        // Exponent 0: uniform activity.
        let cfg = GbmConfig { zipf_exponent: 0.0, symbols: 10, ..GbmConfig::default() };
        let mut counts = [0u64; 10];
        for (_, m) in Generator::new(cfg.clone()).unwrap().take(100_000) {
            counts[m.symbol().unwrap() as usize] += 1;
        }
        for c in counts {
            assert!((c as f64 - 10_000.0).abs() < 5.0 * 94.9, "uniform counts {counts:?}");
        }
    }

    /// Quotes stay positive and ordered at the edges: a huge tick (every price
    /// clamps to one tick) and a flat, zero-vol mid.
    #[test]
    fn quantisation_edges() {
        let cfg = GbmConfig { tick_size: MAX_TICK_SIZE, ..GbmConfig::default() };
        for (_, m) in Generator::new(cfg.clone()).unwrap().take(10_000) {
            if let Message::Quote(q) = m {
                assert_eq!(q.bid_px, MAX_TICK_SIZE);
                assert!(q.ask_px > q.bid_px);
            }
        }
        let cfg =
            GbmConfig { min_vol: 0.0, max_vol: 0.0, trade_ratio: 0.0, ..GbmConfig::default() };
        let g = Generator::new(cfg.clone()).unwrap();
        let first: Vec<_> = g.take(5_000).collect();
        let g = Generator::new(cfg.clone()).unwrap();
        for (_, m) in &first {
            let Message::Quote(q) = m else { panic!("trade with trade_ratio 0") };
            let p = g.symbol_params(q.symbol).unwrap();
            let mid_ticks = (p.initial_mid / cfg.tick_size as f64).round() as i64;
            assert_eq!(q.bid_px, (mid_ticks - p.spread_ticks / 2) * cfg.tick_size);
        }
        let mut s = SymbolSim {
            mid: f64::NAN,
            drift_term: 0.0,
            vol_term: 0.0,
            spread_ticks: 2,
            max_ticks: SymbolSim::max_ticks(100, 2),
            bid_px: 0,
            ask_px: 0,
            bid_qty: 0,
            ask_qty: 0,
            updates: 0,
        };
        s.requote(100);
        assert_eq!((s.bid_px, s.ask_px), (100, 300));
        s.mid = f64::INFINITY;
        s.requote(100);
        assert!(s.ask_px <= MAX_QUOTE_PX && s.ask_px > MAX_QUOTE_PX - 300, "{s:?}");
        assert_eq!(s.ask_px - s.bid_px, 200);
    }

    #[test]
    fn fill_and_iterator_agree_with_next_message() {
        let cfg = GbmConfig { seed: 99, symbols: 17, ..GbmConfig::default() };
        let mut a = Generator::new(cfg.clone()).unwrap();
        let mut batch = [Message::Unknown { kind: 0 }; 64];
        a.fill(&mut batch);
        assert_eq!(a.produced(), 64);
        let b: Vec<_> = expected_stream(&cfg, 64).collect();
        assert_eq!(b.len(), 64);
        for (i, (seq, m)) in b.iter().enumerate() {
            assert_eq!(*seq, SeqNo(i as u64 + 1));
            assert_eq!(*m, batch[i]);
        }
        assert_eq!(a.config(), &cfg);
    }

    #[test]
    #[should_panic(expected = "invalid GbmConfig")]
    fn oracle_refuses_invalid_config() {
        let cfg = GbmConfig { symbols: 0, ..GbmConfig::default() };
        let _ = expected_stream(&cfg, 1).count();
    }
}
