//! Capture files: record what a subscriber receives as pcapng, and read such
//! captures back (replay, the `tickwire-pcap` summary, the Wireshark dissector's tests).
//!
//! ```text
//!  transport.poll ─▶ Pcap<S> ──packet──▶ the subscriber's loop (unchanged)
//!                      │ copy into the open batch (no lock, no syscall)
//!                      ▼
//!            full: ArrayQueue<batch> ──▶ writer thread ──▶ FILE.pcapng (FILE.1.pcapng ...)
//!            free: ArrayQueue<batch> ◀──    (Ethernet/IPv4/UDP frames, ns stamps)
//! ```
//!
//! [`Pcap<S>`] wraps any [`Subscriber`], as [`crate::lossy::Lossy`] does:
//! every [`SubEvent::Packet`] is copied, with its line and its kernel
//! receive stamp (the wall clock where the transport has none), into a batch
//! buffer, and passed up unchanged. A full batch (or one holding packets
//! older than [`BATCH_AGE_NS`]) is handed to the writer thread over a
//! lock-free queue; the hot path never blocks, never allocates and makes no
//! system call but the writer's wake-up once per batch. When the writer falls
//! behind and no free batch is left, packets are **dropped from the capture**
//! (never from the feed) and counted in [`RecordStats::dropped`].
//!
//! Each packet becomes one Ethernet/IPv4/UDP frame (link type Ethernet,
//! timestamps in ns: `if_tsresol` 9), from the feed's source to the line's
//! group, so Wireshark opens the file as it is. A TCP feed's packets are
//! framed the same way, one packet per frame, from the server's address to
//! the client's (the stream's segment boundaries are the kernel's business).
//! Files rotate at [`RecordConfig::rotate_bytes`]: `cap.pcapng`, then
//! `cap.1.pcapng`, `cap.2.pcapng`...
//!
//! The pcapng encoding is the `pcap-file` crate's (pure Rust, reads and
//! writes both pcap and pcapng, typed blocks and options).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use pcap_file::DataLink;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};

use crate::{Line, OnSubEvent, SubEvent, SubStats, Subscriber};

/// Bytes of one batch buffer: a few hundred datagrams, and always the
/// largest packet with its record header.
pub const BATCH_LEN: usize = 256 * 1024;
/// Batch buffers: 8 MiB in all, what the writer may lag behind before the
/// capture drops (a fraction of a second even at a gigabit).
pub const BATCHES: usize = 32;
/// A batch whose first packet is this much older than the newest one is
/// handed over even if not full (10 ms), so a quiet feed reaches the disk too.
pub const BATCH_AGE_NS: u64 = 10_000_000;
/// pcapng block type of an Enhanced Packet Block.
const EPB_TYPE: u32 = 6;
/// Bytes before each packet in a batch: stamp (8), line (1), pad (3), length (4).
const RECORD_HEADER: usize = 16;
/// Ethernet (14) + IPv4 (20) + UDP (8).
pub const FRAME_HEADER: usize = 42;
/// The largest UDP payload one IPv4 frame carries; longer packets (TCP only)
/// are recorded cut to it (their `original_len` says how long they were).
const MAX_UDP_PAYLOAD: usize = 65_535 - 28;

/// Where and how to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordConfig {
    /// The first file; rotation adds `.1`, `.2`... before its extension.
    pub path: PathBuf,
    /// Start a new file once one holds this many bytes (`None`: never).
    pub rotate_bytes: Option<u64>,
    /// The frames' source: the feed's sender (the server's address).
    pub source: SocketAddrV4,
    /// The frames' destination for line A (the group, or the client's address).
    pub dest_a: SocketAddrV4,
    /// The frames' destination for line B.
    pub dest_b: SocketAddrV4,
}

/// What a recording did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Packets written to the capture.
    pub recorded: u64,
    /// Packets the capture lost because the writer could not keep up.
    pub dropped: u64,
    /// Bytes written (all files).
    pub bytes: u64,
    /// Files written.
    pub files: u64,
}

#[derive(Debug, Default)]
struct Shared {
    recorded: AtomicU64,
    dropped: AtomicU64,
    bytes: AtomicU64,
    files: AtomicU64,
    done: AtomicBool,
    error: Mutex<Option<String>>,
}

/// The writer thread and the hot path's end of the hand-off.
#[derive(Debug)]
pub struct Recorder {
    full: Arc<ArrayQueue<Vec<u8>>>,
    free: Arc<ArrayQueue<Vec<u8>>>,
    shared: Arc<Shared>,
    open: Option<Vec<u8>>,
    /// Stamp of the open batch's first packet.
    open_since: u64,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Create the first file (so a bad path fails now) and start the writer.
    pub fn start(cfg: RecordConfig) -> io::Result<Recorder> {
        let full = Arc::new(ArrayQueue::new(BATCHES));
        let free = Arc::new(ArrayQueue::new(BATCHES));
        for _ in 0..BATCHES - 1 {
            let _ = free.push(Vec::with_capacity(BATCH_LEN));
        }
        let shared = Arc::new(Shared::default());
        let file = CaptureFile::create(&cfg, 0)?;
        shared.files.store(1, Ordering::Relaxed);
        let mut writer = Writer {
            cfg,
            file: Some(file),
            index: 0,
            full: full.clone(),
            free: free.clone(),
            shared: shared.clone(),
            frame: Vec::with_capacity(32 + FRAME_HEADER + 65_536),
        };
        let thread = std::thread::Builder::new()
            .name("tickwire-record".into())
            .spawn(move || writer.run())?;
        Ok(Recorder {
            full,
            free,
            shared,
            open: Some(Vec::with_capacity(BATCH_LEN)),
            open_since: 0,
            thread: Some(thread),
        })
    }

    /// Record one packet (the hot path): a copy into the open batch.
    #[inline]
    pub fn record(&mut self, line: Line, stamp_ns: u64, packet: &[u8]) {
        let need = RECORD_HEADER + packet.len();
        if self.open.as_ref().is_some_and(|b| b.len() + need > b.capacity()) {
            self.hand_over();
        }
        if self.open.is_none() {
            self.open = self.free.pop();
        }
        let Some(batch) = self.open.as_mut() else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if batch.is_empty() {
            self.open_since = stamp_ns;
        }
        batch.extend_from_slice(&stamp_ns.to_le_bytes());
        batch.extend_from_slice(&[u8::from(line == Line::B), 0, 0, 0]);
        batch.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        batch.extend_from_slice(packet);
        if stamp_ns.saturating_sub(self.open_since) >= BATCH_AGE_NS {
            self.hand_over();
        }
    }

    /// Hand the open batch (if it holds anything) to the writer.
    pub fn hand_over(&mut self) {
        if let Some(b) = self.open.take_if(|b| !b.is_empty()) {
            // The queues hold every buffer between them: this push has room.
            let _ = self.full.push(b);
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
    }

    /// Counters so far (written and dropped as the writer has seen them).
    pub fn stats(&self) -> RecordStats {
        let s = &self.shared;
        RecordStats {
            recorded: s.recorded.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            files: s.files.load(Ordering::Relaxed),
        }
    }

    /// Write out everything, close the file and stop the writer; the final
    /// counters, or the writer's first error.
    pub fn finish(&mut self) -> io::Result<RecordStats> {
        self.hand_over();
        self.shared.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            t.join().map_err(|_| io::Error::other("the capture writer panicked"))?;
        }
        match self.shared.error.lock().map(|mut e| e.take()) {
            Ok(Some(e)) => Err(io::Error::other(e)),
            _ => Ok(self.stats()),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// One open capture file.
struct CaptureFile {
    writer: PcapNgWriter<BufWriter<File>>,
    bytes: u64,
}

impl CaptureFile {
    fn create(cfg: &RecordConfig, index: u64) -> io::Result<CaptureFile> {
        let path = rotated_path(&cfg.path, index);
        let file = File::create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        let mut writer =
            PcapNgWriter::new(BufWriter::with_capacity(1 << 20, file)).map_err(pcap_error)?;
        writer.write_pcapng_block(interface_block()).map_err(pcap_error)?;
        Ok(CaptureFile { writer, bytes: 0 })
    }
}

/// The one interface of a capture: Ethernet, ns timestamps.
pub fn interface_block() -> InterfaceDescriptionBlock<'static> {
    InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: (FRAME_HEADER + MAX_UDP_PAYLOAD) as u32,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    }
}

/// `cap.pcapng` for 0, `cap.1.pcapng` for 1...
pub fn rotated_path(path: &Path, index: u64) -> PathBuf {
    if index == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{index}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{index}"),
    };
    path.with_file_name(name)
}

fn pcap_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

struct Writer {
    cfg: RecordConfig,
    file: Option<CaptureFile>,
    index: u64,
    full: Arc<ArrayQueue<Vec<u8>>>,
    free: Arc<ArrayQueue<Vec<u8>>>,
    shared: Arc<Shared>,
    frame: Vec<u8>,
}

impl Writer {
    fn run(&mut self) {
        loop {
            let done = self.shared.done.load(Ordering::Acquire);
            while let Some(mut batch) = self.full.pop() {
                if let Err(e) = self.write_batch(&batch) {
                    self.fail(e);
                }
                batch.clear();
                let _ = self.free.push(batch);
            }
            if done {
                break;
            }
            if let Some(f) = self.file.as_mut() {
                // Idle: push what is buffered to the file, so a reader sees it.
                if let Err(e) = io::Write::flush(f.writer.get_mut()) {
                    self.fail(e);
                }
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
        if let Some(f) = self.file.as_mut()
            && let Err(e) = io::Write::flush(f.writer.get_mut())
        {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: io::Error) {
        if let Ok(mut slot) = self.shared.error.lock()
            && slot.is_none()
        {
            *slot = Some(format!("writing the capture: {e}"));
        }
        // Stop writing; the rest is counted as dropped.
        self.file = None;
    }

    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        let (mut at, mut recorded, mut bytes) = (0, 0, 0);
        while at + RECORD_HEADER <= batch.len() {
            let stamp = u64::from_le_bytes(batch[at..at + 8].try_into().expect("8 bytes"));
            let line = if batch[at + 8] == 1 { Line::B } else { Line::A };
            let len = u32::from_le_bytes(batch[at + 12..at + 16].try_into().expect("4 bytes"));
            let packet = &batch[at + RECORD_HEADER..at + RECORD_HEADER + len as usize];
            at += RECORD_HEADER + len as usize;
            let Some(file) = self.file.as_mut() else {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let dest = if line == Line::B { self.cfg.dest_b } else { self.cfg.dest_a };
            // The Enhanced Packet Block by hand, in one buffer and one write
            // (the crate's block writer makes a dozen small writes and a
            // sizing pass per packet: most of the writer's cost at 60k packets/s).
            let block = &mut self.frame;
            block.clear();
            block.extend_from_slice(&[0; 28]);
            push_frame(block, self.cfg.source, dest, packet);
            let captured = block.len() - 28;
            block.resize(block.len() + (4 - captured % 4) % 4, 0);
            let total = (block.len() + 4) as u32;
            block.extend_from_slice(&total.to_le_bytes());
            block[0..4].copy_from_slice(&EPB_TYPE.to_le_bytes());
            block[4..8].copy_from_slice(&total.to_le_bytes());
            // interface 0 (bytes 8..12 stay zero), then the ns stamp high word first.
            block[12..16].copy_from_slice(&((stamp >> 32) as u32).to_le_bytes());
            block[16..20].copy_from_slice(&(stamp as u32).to_le_bytes());
            block[20..24].copy_from_slice(&(captured as u32).to_le_bytes());
            block[24..28].copy_from_slice(&((FRAME_HEADER + packet.len()) as u32).to_le_bytes());
            io::Write::write_all(file.writer.get_mut(), block)?;
            file.bytes += u64::from(total);
            bytes += u64::from(total);
            recorded += 1;
            if self.cfg.rotate_bytes.is_some_and(|max| file.bytes >= max) {
                io::Write::flush(file.writer.get_mut())?;
                self.index += 1;
                self.file = Some(CaptureFile::create(&self.cfg, self.index)?);
                self.shared.files.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.shared.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.shared.recorded.fetch_add(recorded, Ordering::Relaxed);
        Ok(())
    }
}

/// Write an Ethernet/IPv4/UDP frame carrying `payload` (cut to what one
/// IPv4 datagram holds) into `frame`.
pub fn build_frame(frame: &mut Vec<u8>, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
    frame.clear();
    push_frame(frame, src, dst, payload);
}

/// [`build_frame`], appending to `frame`.
fn push_frame(frame: &mut Vec<u8>, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_UDP_PAYLOAD)];
    // Ethernet: a multicast group's MAC (01:00:5e + low 23 bits), else a
    // locally administered one; source locally administered.
    let d = dst.ip().octets();
    if dst.ip().is_multicast() {
        frame.extend_from_slice(&[0x01, 0x00, 0x5e, d[1] & 0x7f, d[2], d[3]]);
    } else {
        frame.extend_from_slice(&[0x02, 0, d[0], d[1], d[2], d[3]]);
    }
    let s = src.ip().octets();
    frame.extend_from_slice(&[0x02, 0, s[0], s[1], s[2], s[3]]);
    frame.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 1; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&s);
    ip[16..20].copy_from_slice(&d);
    let sum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&src.port().to_be_bytes());
    frame.extend_from_slice(&dst.port().to_be_bytes());
    frame.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    frame.extend_from_slice(payload);
}

fn ipv4_checksum(h: &[u8; 20]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A [`Subscriber`] whose received packets are also recorded. See the
/// [module docs](self). The recorder is shared with whoever reads its
/// counters and finishes it ([`Recorder::finish`]) once the loop is over.
#[derive(Debug)]
pub struct Pcap<S> {
    inner: S,
    recorder: Rc<RefCell<Recorder>>,
}

impl<S> Pcap<S> {
    /// Record what `inner` receives with `recorder`.
    pub fn new(inner: S, recorder: Rc<RefCell<Recorder>>) -> Pcap<S> {
        Pcap { inner, recorder }
    }

    /// Unwrap.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Wall clock, ns since the Unix epoch: the stamp of a packet the kernel did not stamp.
fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl<S: Subscriber> Subscriber for Pcap<S> {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        self.inner.send_request(packet)
    }

    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        let mut rec = self.recorder.borrow_mut();
        self.inner.poll(timeout, &mut |ev| {
            if let SubEvent::Packet { line, packet, kernel_rx_ns } = &ev {
                rec.record(*line, kernel_rx_ns.unwrap_or_else(wall_ns), packet);
            }
            on_event(ev)
        })
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.inner.reconnect()
    }

    fn stats(&self) -> SubStats {
        self.inner.stats()
    }
}

/// One UDP datagram of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Its timestamp, ns since the Unix epoch.
    pub ts_ns: u64,
    /// IPv4 source.
    pub src: SocketAddrV4,
    /// IPv4 destination.
    pub dst: SocketAddrV4,
    /// The UDP payload (a Tickwire packet, if it is one).
    pub payload: Vec<u8>,
}

/// What a [`CaptureReader`] skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Packet blocks read.
    pub frames: u64,
    /// Frames that are not IPv4/UDP (or are fragments, or cut short), skipped.
    pub foreign: u64,
    /// Set when the file ends in the middle of a block or a block is
    /// damaged: what was read before it is good, nothing after it is read.
    pub damaged: Option<String>,
}

/// Reads the UDP datagrams of a pcapng file (Ethernet, Linux cooked, raw
/// IPv4 or BSD loopback link types; any timestamp resolution).
pub struct CaptureReader {
    reader: PcapNgReader<BufReader<File>>,
    stats: ReadStats,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader").field("stats", &self.stats).finish()
    }
}

impl CaptureReader {
    /// Open `path`; fails with a readable reason if it is not a pcapng file.
    pub fn open(path: &Path) -> io::Result<CaptureReader> {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        let reader = PcapNgReader::new(BufReader::new(file)).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a pcapng capture: {e}", path.display()),
            )
        })?;
        Ok(CaptureReader { reader, stats: ReadStats::default() })
    }

    /// What was read and skipped so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// The next UDP datagram; `None` at the end (or at a damaged block:
    /// see [`ReadStats::damaged`]).
    pub fn next_datagram(&mut self) -> Option<Captured> {
        loop {
            let block = match self.reader.next_block()? {
                Ok(b) => b,
                Err(e) => {
                    self.stats.damaged = Some(e.to_string());
                    return None;
                }
            };
            let (iface, raw_ts, data) = match block {
                Block::EnhancedPacket(p) => (p.interface_id, p.timestamp, p.data.into_owned()),
                Block::SimplePacket(p) => (0, Duration::ZERO, p.data.into_owned()),
                _ => continue,
            };
            self.stats.frames += 1;
            let Some(idb) = self.reader.interfaces().get(iface as usize) else {
                self.stats.foreign += 1;
                continue;
            };
            let ts_ns = scale_ts(raw_ts, idb);
            match parse_udp(idb.linktype, &data) {
                Some((src, dst, range)) => {
                    return Some(Captured { ts_ns, src, dst, payload: data[range].to_vec() });
                }
                None => self.stats.foreign += 1,
            }
        }
    }
}

impl Iterator for CaptureReader {
    type Item = Captured;
    fn next(&mut self) -> Option<Captured> {
        self.next_datagram()
    }
}

/// pcap-file reads a timestamp as ns whatever the interface's resolution;
/// convert it from the `if_tsresol` the interface declares (default µs).
fn scale_ts(raw: Duration, idb: &InterfaceDescriptionBlock) -> u64 {
    let units = raw.as_nanos() as u64;
    let resol = idb
        .options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6);
    if resol & 0x80 != 0 {
        // Powers of two: units of 2^-n s.
        let n = u32::from(resol & 0x7f);
        return ((u128::from(units) * 1_000_000_000) >> n.min(127)) as u64;
    }
    match resol {
        9 => units,
        r if r < 9 => units.saturating_mul(10u64.pow(u32::from(9 - r))),
        r => units / 10u64.pow(u32::from(r - 9).min(19)),
    }
}

/// Find the UDP payload of a frame: source, destination and the payload's range.
fn parse_udp(
    link: DataLink,
    f: &[u8],
) -> Option<(SocketAddrV4, SocketAddrV4, std::ops::Range<usize>)> {
    let ip_at = match link {
        DataLink::ETHERNET => {
            let mut at = 12;
            let mut ethertype = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                at += 4;
                ethertype = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
            }
            (ethertype == 0x0800).then_some(at + 2)?
        }
        DataLink::LINUX_SLL => {
            (u16::from_be_bytes([*f.get(14)?, *f.get(15)?]) == 0x0800).then_some(16)?
        }
        DataLink::RAW | DataLink::IPV4 => 0,
        DataLink::NULL | DataLink::LOOP => 4,
        _ => return None,
    };
    let ip = f.get(ip_at..)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if ihl < 20 || frag & 0x3fff != 0 || total < ihl + 8 || total > ip.len() {
        return None;
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[ihl..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    let src = SocketAddrV4::new(src_ip, u16::from_be_bytes([udp[0], udp[1]]));
    let dst = SocketAddrV4::new(dst_ip, u16::from_be_bytes([udp[2], udp[3]]));
    let start = ip_at + ihl + 8;
    Some((src, dst, start..start + udp_len - 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, rotate: Option<u64>) -> RecordConfig {
        RecordConfig {
            path: dir.join("cap.pcapng"),
            rotate_bytes: rotate,
            source: "127.0.0.1:9100".parse().unwrap(),
            dest_a: "239.255.0.1:30001".parse().unwrap(),
            dest_b: "239.255.0.2:30002".parse().unwrap(),
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tw-pcap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn records_and_reads_back_frames_and_stamps() {
        let dir = tmpdir("rt");
        let mut r = Recorder::start(cfg(&dir, None)).unwrap();
        for i in 0..1000u64 {
            let line = if i % 2 == 0 { Line::A } else { Line::B };
            r.record(line, 1_764_000_000_000_000_000 + i * 1234, &i.to_le_bytes().repeat(5));
        }
        let st = r.finish().unwrap();
        assert_eq!((st.recorded, st.dropped, st.files), (1000, 0, 1));
        let rd = CaptureReader::open(&dir.join("cap.pcapng")).unwrap();
        let got: Vec<_> = rd.collect();
        assert_eq!(got.len(), 1000);
        for (i, c) in got.iter().enumerate() {
            let i = i as u64;
            assert_eq!(c.ts_ns, 1_764_000_000_000_000_000 + i * 1234);
            assert_eq!(c.payload, i.to_le_bytes().repeat(5));
            assert_eq!(c.src.port(), 9100);
            assert_eq!(c.dst.port(), if i % 2 == 0 { 30001 } else { 30002 });
        }
    }

    #[test]
    fn rotates_by_size() {
        let dir = tmpdir("rot");
        let mut r = Recorder::start(cfg(&dir, Some(10_000))).unwrap();
        for i in 0..1000u64 {
            r.record(Line::A, i, &[7u8; 100]);
        }
        let st = r.finish().unwrap();
        assert!(st.files >= 10, "{st:?}");
        let total: usize = (0..st.files)
            .map(|i| {
                CaptureReader::open(&rotated_path(&dir.join("cap.pcapng"), i)).unwrap().count()
            })
            .sum();
        assert_eq!(total, 1000);
        assert_eq!(rotated_path(Path::new("/x/cap.pcapng"), 2), Path::new("/x/cap.2.pcapng"));
    }

    #[test]
    fn truncated_and_foreign_input_is_reported_not_a_panic() {
        let dir = tmpdir("bad");
        let mut r = Recorder::start(cfg(&dir, None)).unwrap();
        for i in 0..10u64 {
            r.record(Line::A, i, &[1u8; 60]);
        }
        r.finish().unwrap();
        let path = dir.join("cap.pcapng");
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.join("cut.pcapng");
        std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
        let mut rd = CaptureReader::open(&cut).unwrap();
        assert_eq!(rd.by_ref().count(), 9);
        assert!(rd.stats().damaged.is_some());
        let junk = dir.join("junk.pcapng");
        std::fs::write(&junk, b"not a capture at all").unwrap();
        assert!(CaptureReader::open(&junk).is_err());
        // A foreign frame (ARP) is counted and skipped.
        assert_eq!(
            parse_udp(
                DataLink::ETHERNET,
                &[0u8; 12].iter().chain(&[8, 6]).copied().collect::<Vec<_>>()
            ),
            None
        );
    }

    #[test]
    fn drops_when_the_writer_is_behind_are_counted() {
        let dir = tmpdir("drop");
        let mut r = Recorder::start(cfg(&dir, None)).unwrap();
        // Take every free buffer without handing any over: the next packet drops.
        let big = vec![0u8; BATCH_LEN - RECORD_HEADER];
        let mut held = Vec::new();
        while let Some(b) = r.free.pop() {
            held.push(b);
        }
        r.open = None;
        r.record(Line::A, 0, &big);
        assert_eq!(r.stats().dropped, 1);
        for b in held {
            let _ = r.free.push(b);
        }
        r.record(Line::A, 0, &[1, 2, 3]);
        let st = r.finish().unwrap();
        assert_eq!((st.recorded, st.dropped), (1, 1));
    }
}
