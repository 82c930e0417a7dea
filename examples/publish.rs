// Run: cargo run --release -p tickwire-examples --example publish -- 127.0.0.1:9001 5000
// (then receive it: cargo run --release --bin client -- --transport tcp --connect 127.0.0.1:9001 --universe 4)
//
//! Publish messages of your own instead of the simulated exchange: the
//! server's whole publishing loop (pacing, batching, the retransmit store,
//! NACK / snapshot / resume recovery, heartbeats, end of session) around a
//! [`MessageSource`] that this program writes.
//!
//! Arguments: `ADDR [COUNT]` (default 5000 messages). The feed is TCP on
//! `ADDR`, paced at 20 000 messages per second; the session starts once one
//! subscriber has logged in and ends after `COUNT` messages. Message `n`
//! (from 1) is, on symbol `n % 4`: for odd `n` a Quote with
//! `bid_px = 100_00000000 + n`, `ask_px = bid_px + 1_000_000`, `bid_qty = n % 100 + 1`,
//! `ask_qty = n % 50 + 1`; for even `n` a Buy Trade at `price = 100_00000000 + n`,
//! `qty = n % 10 + 1`. Every `exch_ts` is `n`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tickwire_core::{Message, Quote, Side, Trade};
use tickwire_server::{MessageSource, ServerConfig, publish};

/// A made-up instrument set: four symbols, a deterministic ramp.
struct Ramp {
    n: u64,
    count: u64,
}

impl MessageSource for Ramp {
    fn symbols(&self) -> u32 {
        4
    }

    fn next_message(&mut self) -> Option<Message> {
        if self.n == self.count {
            return None;
        }
        self.n += 1;
        let n = self.n;
        let symbol = (n % 4) as u32;
        let px = 100_00000000 + n as i64;
        Some(if n % 2 == 1 {
            Message::Quote(Quote {
                symbol,
                bid_px: px,
                ask_px: px + 1_000_000,
                bid_qty: (n % 100 + 1) as u32,
                ask_qty: (n % 50 + 1) as u32,
                exch_ts: n,
                symbol_seq: 0,
            })
        } else {
            Message::Trade(Trade {
                symbol,
                side: Side::Buy,
                price: px,
                qty: (n % 10 + 1) as u32,
                exch_ts: n,
                symbol_seq: 0,
            })
        })
    }

    fn describe(&self) -> String {
        format!("a ramp of {} messages over 4 symbols", self.count)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or("usage: publish ADDR [COUNT]")?.parse()?;
    let count: u64 = args.next().map_or(Ok(5000), |c| c.parse())?;

    let mut cfg = ServerConfig {
        rate: 20_000,
        duration: None,
        wait_clients: 1,
        linger: Duration::from_secs(1),
        stats_interval: None,
        ..ServerConfig::default()
    };
    cfg.transport.addr = addr;
    let stop = Arc::new(AtomicBool::new(false));
    let summary = publish(&cfg, &mut Ramp { n: 0, count }, stop)?;
    println!(
        "published {} messages in {} packets; served {} requests",
        summary.messages, summary.packets, summary.requests
    );
    Ok(())
}
