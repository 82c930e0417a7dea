//! Checks the hex test vectors of `docs/PROTOCOL.md` against this crate.
//!
//! The document is the source of truth; this test reads it at test time and,
//! for every vector, checks that the bytes parse, that the CRC verifies, that
//! every parsed field equals the documented value, and that emitting the
//! documented values yields exactly the documented bytes.
//!
//! Convention in the document: a heading line `#### Vector: \`name\``, then a
//! fenced block tagged `fields` (`key = value` lines) and a fenced block tagged
//! `hex` (bytes as hex pairs; anything after `#` on a line is a comment).
//! A Data packet flagged `FLAG_TIMING` documents its timing block as a
//! `timing = first_due=… last_due=…` line of the `fields` block. A message of
//! a type this crate does not know is `message = Unknown type=0x5a length=8`
//! (its bytes after the 4-byte prefix are zero), and `padding = n` documents
//! n zero bytes after the payload (a datagram may carry them).
//!
//! `print_vectors` (ignored) regenerates the vectors' markdown from the values
//! below: `cargo test -p tickwire-core --test protocol_vectors -- --ignored --nocapture`.

use tickwire_core::recovery::{Event, LateJoin, Mode, Receiver, ReceiverConfig};
use tickwire_core::wire::{
    FLAG_COOKIE, FLAG_TIMING, HEADER_LEN, LoginAck, LoginAckRepr, LoginMode, MessageIter,
    NackReject, NackRejectRepr, Packet, PacketKind, PacketRepr, SnapshotHeader, SnapshotRepr,
    Status, StatusRepr, TIMING_LEN, TOKEN_LEN, Timing, emit_message, emit_record, emit_token,
    message_len, parse_message, parse_token,
};
use tickwire_core::{Instant, Line};
use tickwire_core::{Message, Quote, SeqNo, Side, SymbolState, Trade};

/// A vector: header values, body, and the CRC the header must carry.
#[derive(Clone, Debug, PartialEq)]
struct Vector {
    name: String,
    header: PacketRepr,
    crc: u32,
    body: Body,
    /// Zero bytes after the payload (datagram padding, not covered by the CRC).
    padding: usize,
}

/// One message of a Data or Retransmission payload: a known one, or one of a
/// type this crate does not know, `len` bytes long (prefix included), flags
/// and body zero.
#[derive(Clone, Debug, PartialEq)]
enum Msg {
    Known(Message),
    Unknown { kind: u8, len: u16 },
}

impl Msg {
    fn len(&self) -> usize {
        match self {
            Msg::Known(m) => message_len(m),
            Msg::Unknown { len, .. } => usize::from(*len),
        }
    }
}

/// A packet's payload. `Messages` holds the timing block of a Data packet
/// flagged `FLAG_TIMING` (`None` otherwise), then its messages.
#[derive(Clone, Debug, PartialEq)]
enum Body {
    Empty,
    Messages {
        timing: Option<Timing>,
        messages: Vec<Msg>,
    },
    Snapshot {
        part: u16,
        parts: u16,
        symbols: u32,
        records: Vec<SymbolState>,
    },
    LoginAck(LoginAckRepr),
    NackReject(NackRejectRepr),
    Status(StatusRepr),
    /// A request's 8-byte token: a Probe's nonce, or a cookie.
    Token(u64),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Messages { timing, messages } => {
                timing.map_or(0, |_| TIMING_LEN) + messages.iter().map(Msg::len).sum::<usize>()
            }
            Body::Snapshot { records, .. } => SnapshotRepr::buffer_len(records.len()),
            Body::LoginAck(_) => LoginAck::<&[u8]>::LEN,
            Body::NackReject(_) => NackReject::<&[u8]>::LEN,
            Body::Status(_) => Status::<&[u8]>::LEN,
            Body::Token(_) => TOKEN_LEN,
        }
    }
}

/// Emit the packet described by `header` and `body` (CRC computed), then
/// `padding` zero bytes.
fn emit(header: &PacketRepr, body: &Body, padding: usize) -> Vec<u8> {
    let mut buf = vec![0u8; header.buffer_len() + padding];
    let payload = &mut buf[HEADER_LEN..header.buffer_len()];
    match body {
        Body::Empty => {}
        Body::Messages { timing, messages } => {
            let mut off = 0;
            if let Some(t) = timing {
                t.emit(&mut payload[..TIMING_LEN]);
                off = TIMING_LEN;
            }
            for m in messages {
                match m {
                    Msg::Known(m) => {
                        off += emit_message(m, &mut payload[off..]).expect("message fits")
                    }
                    Msg::Unknown { kind, len } => {
                        payload[off] = *kind;
                        payload[off + 2..off + 4].copy_from_slice(&len.to_le_bytes());
                        off += usize::from(*len);
                    }
                }
            }
        }
        Body::Snapshot { part, parts, symbols, records } => {
            SnapshotHeader::new_unchecked(&mut payload[..8]).emit(*part, *parts, *symbols);
            for (i, r) in records.iter().enumerate() {
                emit_record(r, &mut payload[8 + 56 * i..]);
            }
        }
        Body::LoginAck(r) => LoginAck::new_unchecked(&mut payload[..]).emit(r),
        Body::NackReject(r) => NackReject::new_unchecked(&mut payload[..]).emit(r),
        Body::Status(r) => Status::new_unchecked(&mut payload[..]).emit(r),
        Body::Token(t) => emit_token(payload, *t),
    }
    header.seal(&mut buf);
    buf
}

// ---------------------------------------------------------------------------
// Parsing the document.
// ---------------------------------------------------------------------------

fn kind_from_name(s: &str) -> PacketKind {
    match s {
        "Data" => PacketKind::Data,
        "Heartbeat" => PacketKind::Heartbeat,
        "Retransmission" => PacketKind::Retransmission,
        "Snapshot" => PacketKind::Snapshot,
        "EndOfSession" => PacketKind::EndOfSession,
        "LoginAck" => PacketKind::LoginAck,
        "NackReject" => PacketKind::NackReject,
        "Nack" => PacketKind::Nack,
        "SnapshotRequest" => PacketKind::SnapshotRequest,
        "Login" => PacketKind::Login,
        "Status" => PacketKind::Status,
        "Probe" => PacketKind::Probe,
        "RepairNotice" => PacketKind::RepairNotice,
        other => panic!("unknown packet kind name {other:?}"),
    }
}

fn num(s: &str) -> u64 {
    let s = s.replace('_', "");
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}")),
        None => s.parse().unwrap_or_else(|e| panic!("bad number {s:?}: {e}")),
    }
}

fn inum(s: &str) -> i64 {
    match s.strip_prefix('-') {
        Some(rest) => -(num(rest) as i64),
        None => num(s) as i64,
    }
}

/// `a=1 b=2` → lookup function that panics on a missing key.
fn kv(s: &str) -> impl Fn(&str) -> String + '_ {
    move |key: &str| {
        s.split_whitespace()
            .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("missing {key}= in {s:?}"))
            .to_string()
    }
}

fn parse_side(s: &str) -> Side {
    match s {
        "Buy" => Side::Buy,
        "Sell" => Side::Sell,
        other => panic!("unknown side {other:?}"),
    }
}

fn parse_fields(name: &str, text: &str) -> Vector {
    let mut header = PacketRepr {
        kind: PacketKind::Unknown(0),
        flags: 0,
        epoch: 0,
        first_seq: SeqNo(0),
        count: 0,
        send_time: 0,
        payload_len: 0,
    };
    let mut crc = None;
    let mut seen = Vec::new();
    let mut messages = Vec::new();
    let mut timing = None;
    let mut snapshot: Option<(u16, u16, u32)> = None;
    let mut records = Vec::new();
    let mut body = None;
    let mut padding = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        let (k, v) = (k.trim(), v.trim());
        seen.push(k.to_string());
        match k {
            "kind" => header.kind = kind_from_name(v),
            "flags" => header.flags = num(v) as u16,
            "epoch" => header.epoch = num(v),
            "first_seq" => header.first_seq = SeqNo(num(v)),
            "count" => header.count = num(v) as u16,
            "send_time" => header.send_time = num(v),
            "payload_len" => header.payload_len = num(v) as usize,
            "crc" => crc = Some(num(v) as u32),
            "padding" => padding = num(v) as usize,
            "timing" => {
                let f = kv(v);
                timing =
                    Some(Timing { first_due: num(&f("first_due")), last_due: num(&f("last_due")) });
            }
            "message" => {
                let (ty, rest) = v.split_once(' ').unwrap_or((v, ""));
                let f = kv(rest);
                messages.push(match ty {
                    "Unknown" => {
                        Msg::Unknown { kind: num(&f("type")) as u8, len: num(&f("length")) as u16 }
                    }
                    "Quote" => Msg::Known(Message::Quote(Quote {
                        symbol: num(&f("symbol")) as u32,
                        bid_px: inum(&f("bid_px")),
                        ask_px: inum(&f("ask_px")),
                        bid_qty: num(&f("bid_qty")) as u32,
                        ask_qty: num(&f("ask_qty")) as u32,
                        exch_ts: num(&f("exch_ts")),
                        symbol_seq: num(&f("symbol_seq")),
                    })),
                    "Trade" => Msg::Known(Message::Trade(Trade {
                        symbol: num(&f("symbol")) as u32,
                        side: parse_side(&f("side")),
                        price: inum(&f("price")),
                        qty: num(&f("qty")) as u32,
                        exch_ts: num(&f("exch_ts")),
                        symbol_seq: u32::try_from(num(&f("symbol_seq")))
                            .unwrap_or_else(|_| panic!("{name}: a Trade's symbol_seq is a u32")),
                    })),
                    other => panic!("{name}: unknown message type {other:?}"),
                });
            }
            "snapshot" => {
                let f = kv(v);
                snapshot = Some((
                    num(&f("part")) as u16,
                    num(&f("parts")) as u16,
                    num(&f("symbols")) as u32,
                ));
            }
            "record" => {
                let f = kv(v);
                records.push(SymbolState {
                    symbol: num(&f("symbol")) as u32,
                    bid_px: inum(&f("bid_px")),
                    ask_px: inum(&f("ask_px")),
                    bid_qty: num(&f("bid_qty")) as u32,
                    ask_qty: num(&f("ask_qty")) as u32,
                    last_px: inum(&f("last_px")),
                    last_qty: num(&f("last_qty")) as u32,
                    updates: num(&f("updates")),
                    last_seq: num(&f("last_seq")),
                });
            }
            "login_ack" => {
                let f = kv(v);
                let mode = match f("mode").as_str() {
                    "Resume" => LoginMode::Resume,
                    "Snapshot" => LoginMode::Snapshot,
                    other => panic!("{name}: unknown mode {other:?}"),
                };
                body =
                    Some(Body::LoginAck(LoginAckRepr { oldest: SeqNo(num(&f("oldest"))), mode }));
            }
            "nack_reject" => {
                let f = kv(v);
                body = Some(Body::NackReject(NackRejectRepr {
                    oldest: SeqNo(num(&f("oldest"))),
                    next: SeqNo(num(&f("next"))),
                }));
            }
            "status" => {
                let f = kv(v);
                body = Some(Body::Status(StatusRepr {
                    cookie: num(&f("cookie")),
                    echo: num(&f("echo")),
                    instance: num(&f("instance")),
                    ended: match f("ended").as_str() {
                        "true" => true,
                        "false" => false,
                        other => panic!("{name}: ended={other:?}"),
                    },
                }));
            }
            "token" => body = Some(Body::Token(num(v))),
            other => panic!("{name}: unknown field {other:?}"),
        }
    }
    for required in
        ["kind", "flags", "epoch", "first_seq", "count", "send_time", "payload_len", "crc"]
    {
        assert!(seen.iter().any(|s| s == required), "{name}: field {required} not documented");
    }
    let body = if let Some(b) = body {
        b
    } else if let Some((part, parts, symbols)) = snapshot {
        Body::Snapshot { part, parts, symbols, records }
    } else if !messages.is_empty() || timing.is_some() {
        Body::Messages { timing, messages }
    } else {
        Body::Empty
    };
    Vector { name: name.to_string(), header, crc: crc.expect("crc"), body, padding }
}

fn parse_hex(name: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        let data = line.split('#').next().unwrap_or("");
        for tok in data.split_whitespace() {
            assert_eq!(tok.len(), 2, "{name}: hex token {tok:?} is not one byte");
            out.push(
                u8::from_str_radix(tok, 16).unwrap_or_else(|e| panic!("{name}: {tok:?}: {e}")),
            );
        }
    }
    out
}

/// The text of `docs/PROTOCOL.md`.
fn protocol_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The lines of a fenced block whose opening fence was just read, up to its
/// closing fence (consumed), each ended by a newline.
fn fenced_block<'a>(lines: &mut impl Iterator<Item = &'a str>) -> String {
    let mut block = String::new();
    for l in lines.by_ref() {
        if l.trim_start().starts_with("```") {
            break;
        }
        block.push_str(l);
        block.push('\n');
    }
    block
}

/// Every vector of the document: (documented values, documented bytes).
fn document_vectors() -> Vec<(Vector, Vec<u8>)> {
    let doc = protocol_doc();
    let mut out = Vec::new();
    let mut lines = doc.lines();
    let mut current: Option<String> = None;
    let mut fields: Option<String> = None;
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("#### Vector: ") {
            assert!(current.is_none(), "vector {current:?} has no hex block");
            current = Some(rest.trim().trim_matches('`').to_string());
            fields = None;
            continue;
        }
        let fence = line.trim_start();
        if fence == "```fields" || fence == "```hex" {
            let block = fenced_block(&mut lines);
            let name =
                current.clone().unwrap_or_else(|| panic!("a {fence} block outside a vector"));
            if fence == "```fields" {
                fields = Some(block);
            } else {
                let f = fields.take().unwrap_or_else(|| panic!("{name}: hex before fields"));
                out.push((parse_fields(&name, &f), parse_hex(&name, &block)));
                current = None;
            }
        }
    }
    assert!(current.is_none(), "vector {current:?} is incomplete");
    out
}

/// The documented bytes of the vector `name` among `vectors`.
fn vector_bytes(vectors: &[(Vector, Vec<u8>)], name: &str) -> Vec<u8> {
    vectors
        .iter()
        .find(|(v, _)| v.name == name)
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md lacks vector {name}"))
}

/// Parse documented bytes into a [`Vector`] with the crate's parsers.
fn parse_bytes(name: &str, bytes: &[u8]) -> Vector {
    let p = Packet::new_checked(bytes).unwrap_or_else(|e| panic!("{name}: check_len: {e}"));
    p.verify_crc().unwrap_or_else(|e| panic!("{name}: CRC: {e}"));
    let header = PacketRepr::parse(&p).unwrap_or_else(|e| panic!("{name}: header: {e}"));
    let payload = p.payload();
    let body = match header.kind {
        PacketKind::Data | PacketKind::Retransmission => {
            let timed = header.kind == PacketKind::Data && header.flags & FLAG_TIMING != 0;
            assert_eq!(p.has_timing(), timed, "{name}: has_timing");
            assert_eq!(
                p.messages().len(),
                payload.len() - if timed { TIMING_LEN } else { 0 },
                "{name}: messages start after the timing block"
            );
            MessageIter::validate(p.messages(), header.count)
                .unwrap_or_else(|e| panic!("{name}: messages: {e}"));
            let mut rest = p.messages();
            let mut messages = Vec::new();
            while !rest.is_empty() {
                let (m, len) = parse_message(rest).unwrap_or_else(|e| panic!("{name}: {e}"));
                messages.push(match m {
                    Message::Unknown { kind } => Msg::Unknown { kind, len: len as u16 },
                    m => Msg::Known(m),
                });
                rest = &rest[len..];
            }
            Body::Messages { timing: p.timing(), messages }
        }
        PacketKind::Snapshot => {
            let s = SnapshotRepr::parse(payload, header.count)
                .unwrap_or_else(|e| panic!("{name}: snapshot: {e}"));
            Body::Snapshot {
                part: s.part,
                parts: s.parts,
                symbols: s.symbols,
                records: s.records().collect(),
            }
        }
        PacketKind::LoginAck => {
            Body::LoginAck(LoginAckRepr::parse(payload).unwrap_or_else(|e| panic!("{name}: {e}")))
        }
        PacketKind::NackReject => Body::NackReject(
            NackRejectRepr::parse(payload).unwrap_or_else(|e| panic!("{name}: {e}")),
        ),
        PacketKind::Status => {
            Body::Status(StatusRepr::parse(payload).unwrap_or_else(|e| panic!("{name}: {e}")))
        }
        PacketKind::Probe | PacketKind::Nack | PacketKind::SnapshotRequest
            if !payload.is_empty() =>
        {
            Body::Token(parse_token(payload).unwrap_or_else(|e| panic!("{name}: {e}")))
        }
        _ => {
            assert!(payload.is_empty(), "{name}: a {:?} packet with a payload", header.kind);
            Body::Empty
        }
    };
    let padding = bytes.len() - p.as_bytes().len();
    Vector { name: name.to_string(), header, crc: p.crc(), body, padding }
}

#[test]
fn document_vectors_parse_verify_and_reemit() {
    let vectors = document_vectors();
    let names: Vec<&str> = vectors.iter().map(|(v, _)| v.name.as_str()).collect();
    for required in [
        "heartbeat",
        "data",
        "data_timed",
        "data_trade_without_symbol_seq",
        "nack",
        "login_ack",
        "login_status",
        "login_ack_snapshot",
        "nack_reject",
        "snapshot",
        "snapshot_part_0_of_2",
        "snapshot_part_1_of_2",
        "data_unknown_type",
        "data_reserved_flags",
        "data_timed_marker",
        "heartbeat_padded",
        "probe",
        "status",
        "nack_with_cookie",
        "nack_wrong_epoch",
        "repair_notice",
    ] {
        assert!(names.contains(&required), "docs/PROTOCOL.md lacks vector {required}: {names:?}");
    }
    for (doc, bytes) in &vectors {
        let name = &doc.name;
        assert_eq!(
            bytes.len(),
            HEADER_LEN + doc.header.payload_len + doc.padding,
            "{name}: length"
        );
        assert_eq!(doc.body.len(), doc.header.payload_len, "{name}: body vs payload_len");
        // The bytes parse into exactly the documented values, CRC included.
        let parsed = parse_bytes(name, bytes);
        assert_eq!(&parsed, doc, "{name}: parsed values differ from the documented ones");
        // Emitting the documented values gives exactly the documented bytes.
        let emitted = emit(&doc.header, &doc.body, doc.padding);
        assert_eq!(&emitted, bytes, "{name}: emitted bytes differ");
        // Any single flipped bit of the packet is caught (by the framing
        // checks or the CRC); padding is not covered and changes nothing.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let parsed = Packet::new_checked(&b[..]).and_then(|p| PacketRepr::parse(&p));
            if i < bytes.len() - doc.padding {
                assert!(parsed.is_err(), "{name}: flipping byte {i} went unnoticed");
            } else {
                assert_eq!(parsed.ok().as_ref(), Some(&doc.header), "{name}: padding byte {i}");
            }
        }
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate vector names: {names:?}");
}

// ---------------------------------------------------------------------------
// Generating the document's vectors.
// ---------------------------------------------------------------------------

/// The session epoch of the examples: the server's start time in ns (2025-11-24).
const EPOCH: u64 = 1_764_000_000_000_000_000;

/// The timing block of `data_timed`: its two messages fell due 10 µs and
/// 1 µs before the packet's send time (`EPOCH` + 1 s).
const TIMED: Timing = Timing { first_due: EPOCH + 999_990_000, last_due: EPOCH + 999_999_000 };

fn header(
    kind: PacketKind,
    flags: u16,
    first_seq: u64,
    count: u16,
    send_time: u64,
    body: &Body,
) -> PacketRepr {
    PacketRepr {
        kind,
        flags,
        epoch: EPOCH,
        first_seq: SeqNo(first_seq),
        count,
        send_time: EPOCH + send_time,
        payload_len: body.len(),
    }
}

fn quote() -> Message {
    Message::Quote(Quote {
        symbol: 7,
        bid_px: 1_234_500,
        ask_px: 1_234_600,
        bid_qty: 300,
        ask_qty: 500,
        exch_ts: 5_000_000,
        symbol_seq: 17,
    })
}

/// The Trade of the examples (a buyer lifts the 123.46 offer for 200) with
/// `symbol_seq`, symbol 7's update number: 18 at sequence 1001 (after the
/// Quote's 17), 19 and 20 in the later vectors' Trades at 1003 and 1004; 0
/// as a publisher that predates the field sends it.
fn trade(symbol_seq: u32) -> Message {
    Message::Trade(Trade {
        symbol: 7,
        side: Side::Buy,
        price: 1_234_600,
        qty: 200,
        exch_ts: 5_005_000,
        symbol_seq,
    })
}

fn k(m: Message) -> Msg {
    Msg::Known(m)
}

fn example_vectors() -> Vec<(String, PacketRepr, Body, usize)> {
    use PacketKind::*;
    let mut v = Vec::new();
    let mut add = |name: &str, kind, flags, first_seq, count, t, body: Body| {
        let h = header(kind, flags, first_seq, count, t, &body);
        v.push((name.to_string(), h, body, 0));
    };
    add(
        "data",
        Data,
        0,
        1000,
        2,
        1_000_000_000,
        Body::Messages { timing: None, messages: vec![k(quote()), k(trade(18))] },
    );
    add(
        "data_timed",
        Data,
        FLAG_TIMING,
        1000,
        2,
        1_000_000_000,
        Body::Messages { timing: Some(TIMED), messages: vec![k(quote()), k(trade(18))] },
    );
    add(
        "data_trade_without_symbol_seq",
        Data,
        0,
        1001,
        1,
        1_000_000_000,
        Body::Messages { timing: None, messages: vec![k(trade(0))] },
    );
    add("heartbeat", Heartbeat, 0, 1002, 0, 1_250_000_000, Body::Empty);
    add("heartbeat_line_b", Heartbeat, 1, 1002, 0, 1_250_000_000, Body::Empty);
    add("nack", Nack, 0, 1000, 2, 1_300_000_000, Body::Empty);
    add(
        "retransmission",
        Retransmission,
        0,
        1001,
        1,
        1_300_050_000,
        Body::Messages { timing: None, messages: vec![k(trade(18))] },
    );
    add(
        "nack_reject",
        NackReject,
        0,
        5,
        3,
        1_300_060_000,
        Body::NackReject(NackRejectRepr { oldest: SeqNo(900), next: SeqNo(1002) }),
    );
    add("snapshot_request", SnapshotRequest, 0, 0, 0, 1_300_100_000, Body::Empty);
    add(
        "snapshot",
        Snapshot,
        0,
        1002,
        1,
        1_300_150_000,
        Body::Snapshot {
            part: 0,
            parts: 1,
            symbols: 1,
            records: vec![SymbolState {
                symbol: 7,
                bid_px: 1_234_500,
                ask_px: 1_234_600,
                bid_qty: 300,
                ask_qty: 500,
                last_px: 1_234_600,
                last_qty: 200,
                updates: 18,
                last_seq: 1001,
            }],
        },
    );
    add("login", Login, 0, 990, 0, 2_000_000_000, Body::Empty);
    add(
        "login_ack",
        LoginAck,
        0,
        990,
        0,
        2_000_050_000,
        Body::LoginAck(LoginAckRepr { oldest: SeqNo(1), mode: LoginMode::Resume }),
    );
    add(
        "login_status",
        Status,
        0,
        1002,
        0,
        2_000_050_000,
        Body::Status(StatusRepr::login(0x1a57_a1ce_0000_0007, false)),
    );
    add("end_of_session", EndOfSession, 0, 1002, 0, 3_000_000_000, Body::Empty);
    add(
        "login_ack_snapshot",
        LoginAck,
        0,
        1002,
        0,
        2_000_060_000,
        Body::LoginAck(LoginAckRepr { oldest: SeqNo(900), mode: LoginMode::Snapshot }),
    );
    let rec = |symbol, updates, last_seq| SymbolState {
        symbol,
        bid_px: 1_000_000 + i64::from(symbol),
        ask_px: 1_000_100 + i64::from(symbol),
        bid_qty: 100,
        ask_qty: 200,
        last_px: 0,
        last_qty: 0,
        updates,
        last_seq,
    };
    add(
        "snapshot_part_0_of_2",
        Snapshot,
        0,
        1002,
        1,
        2_000_070_000,
        Body::Snapshot { part: 0, parts: 2, symbols: 2, records: vec![rec(0, 500, 999)] },
    );
    add(
        "snapshot_part_1_of_2",
        Snapshot,
        0,
        1002,
        1,
        2_000_070_000,
        Body::Snapshot { part: 1, parts: 2, symbols: 2, records: vec![rec(1, 501, 1001)] },
    );
    add(
        "data_unknown_type",
        Data,
        0,
        1002,
        2,
        2_100_000_000,
        Body::Messages {
            timing: None,
            messages: vec![Msg::Unknown { kind: b'Z', len: 8 }, k(trade(19))],
        },
    );
    add(
        "data_reserved_flags",
        Data,
        0x8000 | 0x0004 | FLAG_TIMING,
        1004,
        1,
        2_200_000_000,
        Body::Messages {
            timing: Some(Timing {
                first_due: EPOCH + 2_199_990_000,
                last_due: EPOCH + 2_199_990_000,
            }),
            messages: vec![k(trade(20))],
        },
    );
    add(
        "data_timed_marker",
        Data,
        FLAG_TIMING,
        1005,
        0,
        2_250_000_000,
        Body::Messages {
            timing: Some(Timing {
                first_due: EPOCH + 2_249_990_000,
                last_due: EPOCH + 2_249_990_000,
            }),
            messages: vec![],
        },
    );
    add("heartbeat_padded", Heartbeat, 0, 1005, 0, 2_300_000_000, Body::Empty);
    if let Some(last) = v.last_mut() {
        last.3 = 6;
    }
    let mut add = |name: &str, kind, flags, first_seq, count, t, body: Body| {
        let h = header(kind, flags, first_seq, count, t, &body);
        v.push((name.to_string(), h, body, 0));
    };
    add("probe", Probe, 0, 1002, 0, 2_400_000_000, Body::Token(0x0123_4567_89ab_cdef));
    add(
        "status",
        Status,
        0,
        1005,
        0,
        2_400_050_000,
        Body::Status(StatusRepr {
            cookie: 0x5eed_c00c_1e00_0001,
            echo: 0x0123_4567_89ab_cdef,
            instance: 0x1a57_a1ce_0000_0007,
            ended: false,
        }),
    );
    add(
        "nack_with_cookie",
        Nack,
        FLAG_COOKIE,
        1003,
        2,
        2_500_000_000,
        Body::Token(0x5eed_c00c_1e00_0001),
    );
    add("repair_notice", RepairNotice, 0, 1000, 2, 1_300_040_000, Body::Empty);
    let h = PacketRepr {
        epoch: EPOCH - 1,
        ..header(Nack, FLAG_COOKIE, 1003, 2, 2_500_100_000, &Body::Token(0))
    };
    let wrong_epoch = ("nack_wrong_epoch".to_string(), h, Body::Token(0x5eed_c00c_1e00_0001), 0);
    // The document's order: nack_wrong_epoch before repair_notice.
    let last = v.pop().expect("repair_notice");
    v.push(wrong_epoch);
    v.push(last);
    v
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// One annotated hex line per field: `(bytes, label)`.
fn annotate(bytes: &[u8], layout: &[(usize, &str)], out: &mut Vec<(Vec<u8>, String)>) {
    let mut off = 0;
    for &(len, label) in layout {
        let b = &bytes[off..off + len];
        out.push((b.to_vec(), format!("{:>3}  {label}", off)));
        off += len;
    }
    assert_eq!(off, bytes.len());
}

const HEADER_LAYOUT: &[(usize, &str)] = &[
    (2, "magic"),
    (1, "version"),
    (1, "kind"),
    (2, "count"),
    (2, "flags"),
    (8, "epoch"),
    (8, "first_seq"),
    (8, "send_time"),
    (4, "payload_len"),
    (4, "crc"),
];
const QUOTE_LAYOUT: &[(usize, &str)] = &[
    (1, "type 'Q'"),
    (1, "flags"),
    (2, "length"),
    (4, "symbol"),
    (8, "bid_px"),
    (8, "ask_px"),
    (4, "bid_qty"),
    (4, "ask_qty"),
    (8, "exch_ts"),
    (8, "symbol_seq"),
];
const TRADE_LAYOUT: &[(usize, &str)] = &[
    (1, "type 'T'"),
    (1, "side"),
    (2, "length"),
    (4, "symbol"),
    (8, "price"),
    (4, "qty"),
    (4, "symbol_seq"),
    (8, "exch_ts"),
];
const TIMING_LAYOUT: &[(usize, &str)] = &[(8, "first_due"), (8, "last_due")];
const SNAP_HEADER_LAYOUT: &[(usize, &str)] = &[(2, "part"), (2, "parts"), (4, "symbols")];
const RECORD_LAYOUT: &[(usize, &str)] = &[
    (4, "symbol"),
    (4, "bid_qty"),
    (4, "ask_qty"),
    (4, "last_qty"),
    (8, "bid_px"),
    (8, "ask_px"),
    (8, "last_px"),
    (8, "updates"),
    (8, "last_seq"),
];
const LOGIN_ACK_LAYOUT: &[(usize, &str)] = &[(8, "oldest"), (1, "mode"), (7, "reserved")];
const NACK_REJECT_LAYOUT: &[(usize, &str)] = &[(8, "oldest"), (8, "next")];
const STATUS_LAYOUT: &[(usize, &str)] =
    &[(8, "cookie"), (8, "echo"), (8, "instance"), (1, "state"), (7, "reserved")];
const TOKEN_LAYOUT: &[(usize, &str)] = &[(8, "token")];

fn fields_text(h: &PacketRepr, crc: u32, body: &Body) -> String {
    let mut s = String::new();
    s += &format!("kind        = {:?}\n", h.kind);
    s += &format!("flags       = {}\n", h.flags);
    s += &format!("epoch       = {}\n", h.epoch);
    s += &format!("first_seq   = {}\n", h.first_seq.0);
    s += &format!("count       = {}\n", h.count);
    s += &format!("send_time   = {}\n", h.send_time);
    s += &format!("payload_len = {}\n", h.payload_len);
    s += &format!("crc         = {crc:#010x}\n");
    match body {
        Body::Empty => {}
        Body::Messages { timing, messages } => {
            if let Some(t) = timing {
                s += &format!("timing      = first_due={} last_due={}\n", t.first_due, t.last_due);
            }
            for m in messages {
                let m = match m {
                    Msg::Known(m) => m,
                    Msg::Unknown { kind, len } => {
                        s += &format!("message     = Unknown type={kind:#04x} length={len}\n");
                        continue;
                    }
                };
                match m {
                    Message::Quote(q) => {
                        s += &format!(
                            "message     = Quote symbol={} bid_px={} ask_px={} bid_qty={} ask_qty={} exch_ts={} symbol_seq={}\n",
                            q.symbol,
                            q.bid_px,
                            q.ask_px,
                            q.bid_qty,
                            q.ask_qty,
                            q.exch_ts,
                            q.symbol_seq
                        )
                    }
                    Message::Trade(t) => {
                        s += &format!(
                            "message     = Trade symbol={} side={:?} price={} qty={} exch_ts={} symbol_seq={}\n",
                            t.symbol, t.side, t.price, t.qty, t.exch_ts, t.symbol_seq
                        )
                    }
                    Message::Unknown { .. } => unreachable!("examples hold known messages"),
                }
            }
        }
        Body::Snapshot { part, parts, symbols, records } => {
            s += &format!("snapshot    = part={part} parts={parts} symbols={symbols}\n");
            for r in records {
                s += &format!(
                    "record      = symbol={} bid_px={} ask_px={} bid_qty={} ask_qty={} last_px={} last_qty={} updates={} last_seq={}\n",
                    r.symbol,
                    r.bid_px,
                    r.ask_px,
                    r.bid_qty,
                    r.ask_qty,
                    r.last_px,
                    r.last_qty,
                    r.updates,
                    r.last_seq
                );
            }
        }
        Body::LoginAck(r) => {
            s += &format!("login_ack   = oldest={} mode={:?}\n", r.oldest.0, r.mode)
        }
        Body::NackReject(r) => {
            s += &format!("nack_reject = oldest={} next={}\n", r.oldest.0, r.next.0)
        }
        Body::Status(r) => {
            s += &format!(
                "status      = cookie={:#018x} echo={:#018x} instance={:#018x} ended={}\n",
                r.cookie, r.echo, r.instance, r.ended
            )
        }
        Body::Token(t) => s += &format!("token       = {t:#018x}\n"),
    }
    s
}

fn hex_text(bytes: &[u8], body: &Body) -> String {
    let mut lines = Vec::new();
    annotate(&bytes[..HEADER_LEN], HEADER_LAYOUT, &mut lines);
    let payload = &bytes[HEADER_LEN..];
    match body {
        Body::Empty => {}
        Body::Messages { timing, messages } => {
            let mut off = 0;
            if timing.is_some() {
                for &(flen, label) in TIMING_LAYOUT {
                    let b = payload[off..off + flen].to_vec();
                    lines.push((b, format!("{:>3}  timing+{off}  {label}", HEADER_LEN + off)));
                    off += flen;
                }
            }
            for m in messages {
                let len = m.len();
                let unknown =
                    [(1, "type (unknown)"), (1, "flags"), (2, "length"), (len - 4, "body")];
                let layout: &[(usize, &str)] = match m {
                    Msg::Known(Message::Quote(_)) => QUOTE_LAYOUT,
                    Msg::Known(_) => TRADE_LAYOUT,
                    Msg::Unknown { .. } => &unknown,
                };
                let mut o = 0;
                for &(flen, label) in layout {
                    let b = payload[off + o..off + o + flen].to_vec();
                    lines.push((b, format!("{:>3}  msg@{off}+{o}  {label}", HEADER_LEN + off + o)));
                    o += flen;
                }
                off += len;
            }
        }
        Body::Snapshot { records, .. } => {
            let mut o = 0;
            for &(flen, label) in SNAP_HEADER_LAYOUT {
                let b = payload[o..o + flen].to_vec();
                lines.push((b, format!("{:>3}  part header+{o}  {label}", HEADER_LEN + o)));
                o += flen;
            }
            for r in 0..records.len() {
                let base = 8 + 56 * r;
                let mut o = 0;
                for &(flen, label) in RECORD_LAYOUT {
                    let b = payload[base + o..base + o + flen].to_vec();
                    lines.push((
                        b,
                        format!("{:>3}  record[{r}]+{o}  {label}", HEADER_LEN + base + o),
                    ));
                    o += flen;
                }
            }
        }
        Body::LoginAck(_) | Body::NackReject(_) | Body::Status(_) | Body::Token(_) => {
            let layout = match body {
                Body::LoginAck(_) => LOGIN_ACK_LAYOUT,
                Body::NackReject(_) => NACK_REJECT_LAYOUT,
                Body::Status(_) => STATUS_LAYOUT,
                _ => TOKEN_LAYOUT,
            };
            let mut o = 0;
            for &(flen, label) in layout {
                let b = payload[o..o + flen].to_vec();
                lines.push((b, format!("{:>3}  body+{o}  {label}", HEADER_LEN + o)));
                o += flen;
            }
        }
    }
    let padding = &bytes[HEADER_LEN + body.len()..];
    if !padding.is_empty() {
        lines.push((padding.to_vec(), format!("{:>3}  padding", HEADER_LEN + body.len())));
    }
    let mut s = String::new();
    for (b, label) in lines {
        let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
        let v = le(&b);
        let value = if label.ends_with("magic") {
            format!(" = {v:#06x} (\"TW\")")
        } else if label.ends_with("crc") {
            format!(" = {v:#010x}")
        } else if label.ends_with("  kind") {
            format!(" = {v} ({:?})", PacketKind::from_byte(v as u8))
        } else if label.contains("type '") || label.ends_with("(unknown)") {
            format!(" = {v:#04x}")
        } else if label.ends_with("side") {
            format!(" = {v} ({:?})", Side::from_byte(v as u8))
        } else if label.ends_with("padding") {
            " (ignored: after payload_len, not covered by the CRC)".to_string()
        } else if label.ends_with("symbol_seq") && v == 0 {
            " = 0 (not carried)".to_string()
        } else if label.ends_with("mode") {
            format!(" = {v} ({:?})", LoginMode::from_byte(v as u8))
        } else {
            format!(" = {v}")
        };
        s += &format!("{:<24} # {label}{value}\n", hex.join(" "));
    }
    s
}

#[test]
#[ignore = "prints the vectors' markdown for docs/PROTOCOL.md"]
fn print_vectors() {
    for (name, h, body, padding) in example_vectors() {
        let bytes = emit(&h, &body, padding);
        let crc = Packet::new_checked(&bytes[..]).unwrap().crc();
        println!("#### Vector: `{name}`\n");
        let pad = if padding > 0 { format!("padding     = {padding}\n") } else { String::new() };
        println!("```fields\n{}{pad}```\n", fields_text(&h, crc, &body));
        println!("```hex\n{}```\n", hex_text(&bytes, &body));
    }
}

/// The examples above are what the document holds (so `print_vectors` and the
/// document cannot drift apart silently).
#[test]
fn document_holds_the_examples() {
    let doc: Vec<(String, Vec<u8>)> =
        document_vectors().into_iter().map(|(v, b)| (v.name, b)).collect();
    let ours: Vec<(String, Vec<u8>)> =
        example_vectors().into_iter().map(|(n, h, b, p)| (n, emit(&h, &b, p))).collect();
    assert_eq!(doc, ours);
}

/// The timing block of `data_timed` reads back as documented, and the due
/// times of its two messages are the block's first and last.
#[test]
fn data_timed_carries_the_documented_due_times() {
    let vectors = document_vectors();
    let bytes = |name: &str| vector_bytes(&vectors, name);
    let timed = bytes("data_timed");
    let p = Packet::new_checked(&timed[..]).unwrap();
    assert_eq!(p.flags(), FLAG_TIMING);
    assert!(p.has_timing());
    let t = p.timing().expect("data_timed has a timing block");
    assert_eq!(
        t,
        Timing { first_due: 1_764_000_000_999_990_000, last_due: 1_764_000_000_999_999_000 }
    );
    assert_eq!(t.due(0, 2), 1_764_000_000_999_990_000);
    assert_eq!(t.due(1, 2), 1_764_000_000_999_999_000);
    // The messages follow the block, byte for byte those of `data`.
    let plain = bytes("data");
    let q = Packet::new_checked(&plain[..]).unwrap();
    assert_eq!(q.timing(), None);
    assert_eq!(p.messages(), q.messages());
    assert_eq!(p.payload_len(), q.payload_len() + TIMING_LEN);
}

/// The "receiver behaviour" vectors, fed to the reference receiver: an
/// unknown message is skipped by its length and occupies its sequence;
/// reserved flag bits change nothing; padding is ignored; a heartbeat below
/// what was delivered (a lagging A/B line) changes nothing.
#[test]
fn receiver_handles_the_behaviour_vectors_as_documented() {
    let vectors = document_vectors();
    let bytes = |name: &str| vector_bytes(&vectors, name);
    let mut rx = Receiver::new(ReceiverConfig {
        mode: Mode::Datagram,
        late_join: LateJoin::FromFirstSeen,
        ..ReceiverConfig::default()
    });
    let now = Instant(1_000_000);
    let messages = |rx: &mut Receiver| {
        let mut out = Vec::new();
        while let Some(ev) = rx.poll_event() {
            if let Event::Message { seq, msg, due_time, .. } = ev {
                out.push((seq.0, msg, due_time));
            }
        }
        out
    };
    rx.handle_packet(now, Line::A, &bytes("data_unknown_type"));
    let got = messages(&mut rx);
    assert_eq!(
        got.iter().map(|(s, m, _)| (*s, *m)).collect::<Vec<_>>(),
        vec![(1002, Message::Unknown { kind: b'Z' }), (1003, trade(19))]
    );
    rx.handle_packet(now, Line::B, &bytes("data_reserved_flags"));
    assert_eq!(messages(&mut rx), vec![(1004, trade(20), EPOCH + 2_199_990_000)]);
    // A timing block and no message: a marker like a heartbeat (§ 4).
    rx.handle_packet(now, Line::A, &bytes("data_timed_marker"));
    assert!(messages(&mut rx).is_empty());
    assert_eq!(rx.stats().malformed, 0, "count 0 with a timing block is not malformed");
    rx.handle_packet(now, Line::A, &bytes("heartbeat_padded"));
    // A heartbeat from a lagging line (1002 < 1005): nothing happens.
    rx.handle_packet(now, Line::B, &bytes("heartbeat"));
    assert!(messages(&mut rx).is_empty());
    assert_eq!(rx.next_expected(), SeqNo(1005));
    assert_eq!(rx.open_gaps(), 0);
    assert_eq!(rx.stats().malformed, 0);
    assert_eq!(rx.stats().bad_crc, 0);
    assert_eq!(rx.stats().gaps_detected, 0);
    // The wire views agree: padding is not part of the packet.
    let padded = bytes("heartbeat_padded");
    let p = Packet::new_checked(&padded[..]).unwrap();
    assert_eq!(p.as_bytes().len(), HEADER_LEN);
    assert!(p.payload().is_empty());
}

/// The Trades of the vectors, in document order: (vector, sequence, Trade,
/// its 32 bytes).
fn vector_trades(vectors: &[(Vector, Vec<u8>)]) -> Vec<(String, u64, Trade, Vec<u8>)> {
    let mut out = Vec::new();
    for (v, bytes) in vectors {
        let Body::Messages { messages, .. } = &v.body else { continue };
        let p = Packet::new_checked(&bytes[..]).unwrap();
        let mut off = 0;
        for (i, m) in messages.iter().enumerate() {
            if let Msg::Known(Message::Trade(t)) = m {
                let seq = v.header.first_seq.0 + i as u64;
                out.push((v.name.clone(), seq, *t, p.messages()[off..off + 32].to_vec()));
            }
            off += m.len();
        }
    }
    out
}

/// Every Trade of § 11 carries symbol 7's update number in bytes 20..24, as
/// a Quote carries it at 40..48 and a snapshot record counts it in
/// `updates`: the `data` Quote is the symbol's 17th update, its Trade (1001)
/// the 18th (so `snapshot` at 1002 says 18 updates, the last at 1001), the
/// Trades at 1003 and 1004 the 19th and 20th; the one vector without it is
/// the Trade of a publisher that predates the field.
#[test]
fn trades_carry_their_symbols_update_number() {
    let vectors = document_vectors();
    let trades = vector_trades(&vectors);
    let got: Vec<(&str, u64, u32)> =
        trades.iter().map(|(n, s, t, _)| (n.as_str(), *s, t.symbol_seq)).collect();
    assert_eq!(
        got,
        [
            ("data", 1001, 18),
            ("data_timed", 1001, 18),
            ("data_trade_without_symbol_seq", 1001, 0),
            ("retransmission", 1001, 18),
            ("data_unknown_type", 1003, 19),
            ("data_reserved_flags", 1004, 20),
        ]
    );
    for (name, _, t, b) in &trades {
        assert_eq!(&b[20..24], &t.symbol_seq.to_le_bytes(), "{name}: bytes 20..24, little-endian");
    }
    // The Quote before the Trade in `data`: the same counter, one less.
    let data = vectors.iter().find(|(v, _)| v.name == "data").unwrap();
    let Body::Messages { messages, .. } = &data.0.body else { panic!("data has messages") };
    let Msg::Known(Message::Quote(q)) = messages[0] else { panic!("data starts with a Quote") };
    assert_eq!(q.symbol_seq + 1, u64::from(trades[0].2.symbol_seq));
    // The snapshot at 1002: 18 updates of symbol 7, the last at 1001.
    let snap = vectors.iter().find(|(v, _)| v.name == "snapshot").unwrap();
    let Body::Snapshot { records, .. } = &snap.0.body else { panic!("snapshot has records") };
    assert_eq!((records[0].symbol, records[0].updates, records[0].last_seq), (7, 18, 1001));
}

/// A Trade whose bytes 20..24 are zero (a publisher that predates the field,
/// which wrote them as reserved zero) parses with `symbol_seq` 0, which is
/// "not carried" (a per-symbol receiver lets such a trade wait for the
/// strict order: `core/src/recovery/symbols.rs`). The vector
/// `data_trade_without_symbol_seq` is the `data` Trade so, and zeroing those
/// bytes of any vector's Trade (CRC refilled) gives the same.
#[test]
fn an_all_zero_symbol_seq_parses_as_not_carried() {
    let vectors = document_vectors();
    let trades = vector_trades(&vectors);
    let old = trades.iter().find(|t| t.0 == "data_trade_without_symbol_seq").unwrap();
    assert_eq!(&old.3[20..24], &[0; 4]);
    let (m, len) = parse_message(&old.3).unwrap();
    assert_eq!((m, len), (trade(0), 32));
    // Apart from bytes 20..24 it is the `data` Trade, byte for byte.
    let new = trades.iter().find(|t| t.0 == "data").unwrap();
    let mut zeroed = new.3.clone();
    zeroed[20..24].fill(0);
    assert_eq!(zeroed, old.3);
    // Every vector's Trade with the field zeroed, in its packet.
    for (v, bytes) in &vectors {
        let Body::Messages { timing, messages } = &v.body else { continue };
        let mut b = bytes.clone();
        let mut off = HEADER_LEN + timing.map_or(0, |_| TIMING_LEN);
        for m in messages {
            if let Msg::Known(Message::Trade(_)) = m {
                b[off + 20..off + 24].fill(0);
            }
            off += m.len();
        }
        Packet::new_unchecked(&mut b[..]).fill_crc();
        let p = Packet::new_checked(&b[..]).unwrap();
        p.verify_crc().unwrap();
        for m in MessageIter::new(p.messages(), p.count()) {
            if let Message::Trade(t) = m.unwrap() {
                assert_eq!(Message::Trade(t), trade(0), "{}", v.name);
            }
        }
    }
}

// ------------------------------------------------------------ authentication

/// The key of the MAC vectors: the bytes 0x00, 0x01, ... 0x1f.
fn mac_key() -> tickwire_core::wire::auth::AuthKey {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    tickwire_core::wire::auth::AuthKey::new(k)
}

/// The MAC vectors of § 12: `#### MAC vector: \`<plain>_mac\``, a `mac-key`
/// block (64 hex digits) and a `mac-hex` block (the sealed packet), each
/// sealing the § 11 vector `<plain>`. Returns (name, key bytes, sealed bytes).
fn document_mac_vectors() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let doc = protocol_doc();
    let mut out = Vec::new();
    let mut lines = doc.lines();
    let (mut name, mut key) = (None::<String>, None::<Vec<u8>>);
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("#### MAC vector: ") {
            name = Some(rest.trim().trim_matches('`').to_string());
            continue;
        }
        let fence = line.trim_start();
        if fence == "```mac-key" || fence == "```mac-hex" {
            let block = fenced_block(&mut lines);
            let n = name.clone().unwrap_or_else(|| panic!("a {fence} block outside a MAC vector"));
            if fence == "```mac-key" {
                let hex = block.trim();
                assert_eq!(hex.len(), 64, "{n}: the key is 64 hex digits");
                key = Some(
                    (0..32)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                        .collect(),
                );
            } else {
                let k = key.take().unwrap_or_else(|| panic!("{n}: mac-hex before mac-key"));
                out.push((n, k, parse_hex(&name.take().unwrap(), &block)));
            }
        }
    }
    out
}

/// Seal § 11's `plain` with [`mac_key`].
fn sealed(plain: &str) -> Vec<u8> {
    let bytes = vector_bytes(&document_vectors(), plain);
    let mut buf = bytes.clone();
    buf.resize(bytes.len() + tickwire_core::wire::auth::TAG_LEN, 0);
    let n = tickwire_core::wire::auth::seal(&mac_key(), &mut buf, bytes.len()).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn mac_vectors_seal_verify_and_open() {
    use tickwire_core::wire::auth::{AuthError, AuthKey, FLAG_MAC, TAG_LEN, open, verify};
    let vectors = document_mac_vectors();
    let names: Vec<&str> = vectors.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["heartbeat_mac", "data_timed_mac", "probe_mac", "status_mac"],
        "the MAC vectors of § 12"
    );
    let key_bytes = |k: &[u8]| -> [u8; 32] { k.try_into().unwrap() };
    for (name, key_raw, doc) in &vectors {
        let plain_name = name.strip_suffix("_mac").unwrap();
        let plain = vector_bytes(&document_vectors(), plain_name);
        let key = AuthKey::from_file_bytes(key_raw).unwrap();
        assert_eq!(
            &sealed(plain_name),
            doc,
            "{name}: sealing {plain_name} gives the documented bytes"
        );
        let p = Packet::new_checked(&doc[..]).unwrap();
        assert_eq!(p.flags() & FLAG_MAC, FLAG_MAC, "{name}: bit 3 set");
        assert_eq!(
            p.payload_len(),
            plain.len() - HEADER_LEN + TAG_LEN,
            "{name}: payload_len grew by 16"
        );
        p.verify_crc().unwrap_or_else(|e| panic!("{name}: the CRC covers the tag: {e}"));
        // The tag, computed from the specification's words with the blake3
        // crate's one-shot keyed hash (not the code under test).
        let len = doc.len();
        let covered = [&doc[..36], &doc[HEADER_LEN..len - TAG_LEN]].concat();
        let k = key_bytes(key_raw);
        assert_eq!(
            &blake3::keyed_hash(&k, &covered).as_bytes()[..TAG_LEN],
            &doc[len - TAG_LEN..],
            "{name}"
        );
        assert_eq!(verify(&key, doc), Ok(plain.len()), "{name}");
        let mut out = vec![0u8; doc.len()];
        assert_eq!(open(&key, doc, &mut out), Ok(plain.len()));
        assert_eq!(&out[..plain.len()], &plain[..], "{name}: opening gives {plain_name} back");
        let mut other = [0u8; 32];
        other[0] = 1;
        assert_eq!(
            verify(&AuthKey::new(other), doc),
            Err(AuthError::Mismatch),
            "{name}: wrong key"
        );
        let mut forged = doc.clone();
        forged[16] ^= 1; // first_seq, CRC refilled as a forger would
        Packet::new_unchecked(&mut forged[..]).fill_crc();
        assert_eq!(verify(&key, &forged), Err(AuthError::Mismatch), "{name}: forged first_seq");
        // The unauthenticated vector is refused by a receiver with a key.
        assert_eq!(verify(&key, &plain), Err(AuthError::Missing), "{name}: no MAC");
    }
}

/// Prints § 12's vectors from the code:
/// `cargo test -p tickwire-core --test protocol_vectors -- --ignored --nocapture print_mac_vectors`.
#[test]
#[ignore = "prints the MAC vectors' markdown"]
fn print_mac_vectors() {
    for plain in ["heartbeat", "data_timed", "probe", "status"] {
        let b = sealed(plain);
        println!("#### MAC vector: `{plain}_mac`\n");
        println!("```mac-key\n{}\n```\n", (0..32).map(|i| format!("{i:02x}")).collect::<String>());
        println!("```mac-hex");
        for (i, chunk) in b.chunks(8).enumerate() {
            let hex: Vec<String> = chunk.iter().map(|x| format!("{x:02x}")).collect();
            let what = match i * 8 {
                0 => "magic, version, kind, count, flags (bit 3: MAC)",
                8 => "epoch",
                16 => "first_seq",
                24 => "send_time",
                32 => "payload_len (grown by 16), crc (over everything, tag included)",
                o if o >= b.len() - 16 => "tag",
                _ => "payload",
            };
            println!("{:<24} # {:>3}  {what}", hex.join(" "), i * 8);
        }
        println!("```\n");
    }
}
