// Run: cargo run --release -p tickwire-examples --example subscribe -- 127.0.0.1:9000 42
// (after starting a server: cargo run --release --bin server -- --transport tcp --listen 127.0.0.1:9000 --seed 7 --rate 1000 --duration 30s)
//
//! Subscribe to a TCP feed and print one symbol's quotes, in sequence
//! order and with every gap recovered, until the server's session ends.
//!
//! Arguments: `ADDR SYMBOL [UNIVERSE]` (the universe is the server's
//! `--symbols`, 1000 by default). Each quote is printed on stdout as
//! `quote seq=S bid_px=B ask_px=A bid_qty=BQ ask_qty=AQ` (prices in units
//! of 1e-8, `tickwire_core::PRICE_SCALE`); a second thread reads the symbol
//! from the lock-free cache every 100 ms and prints it on stderr; at the end
//! the cache's final state of the symbol is printed as
//! `final bid_px=B ask_px=A last_px=L updates=U`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tickwire_client::{Event, Subscriber};
use tickwire_core::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: subscribe ADDR SYMBOL [UNIVERSE]";
    let addr = args.next().ok_or(usage)?.parse()?;
    let symbol: u32 = args.next().ok_or(usage)?.parse()?;
    let universe: u32 = args.next().map_or(Ok(1000), |u| u.parse())?;

    let mut sub = Subscriber::builder().tcp(addr).universe(universe).symbols([symbol]).build()?;

    // Another thread watches the cache while this one receives.
    let cache = sub.cache();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(s) = cache.read(symbol).filter(|s| s.updates > 0) {
                    eprintln!(
                        "cache: symbol {symbol} bid {} ask {} after {} updates",
                        s.bid_px, s.ask_px, s.updates
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // The iterator ends with the server's session.
    for ev in sub.events() {
        if let Event::Message { seq, msg: Message::Quote(q), .. } = ev? {
            println!(
                "quote seq={seq} bid_px={} ask_px={} bid_qty={} ask_qty={}",
                q.bid_px, q.ask_px, q.bid_qty, q.ask_qty
            );
        }
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("the cache watcher panicked");

    let s = sub.cache().read(symbol).ok_or("symbol outside the universe")?;
    println!(
        "final bid_px={} ask_px={} last_px={} updates={}",
        s.bid_px, s.ask_px, s.last_px, s.updates
    );
    let summary = sub.summary();
    eprintln!(
        "{} messages delivered up to sequence {}, {} gaps ({} unrecovered)",
        summary.messages_delivered, summary.last_seq, summary.gaps_detected, summary.unrecovered
    );
    Ok(())
}
