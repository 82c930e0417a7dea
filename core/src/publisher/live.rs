//! The live queue: sealed packets waiting for transmission, then the open
//! packet being filled, in one flat buffer.

use super::*;

/// One sealed live packet in the [`LiveQueue`]: where its bytes are.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    start: usize,
    len: usize,
}

/// Live packets, in one flat buffer: the sealed ones waiting for
/// [`Sequencer::poll_transmit`], then the open packet being filled. Messages
/// are encoded once, in place, behind the open packet's header; sealing
/// writes the header and the timing block there, and transmitting stamps the
/// send time, computes the CRC and copies the packet into the transport's
/// buffer: the one copy on the way out. Reset when drained, so the steady
/// state allocates nothing.
#[derive(Debug)]
pub(super) struct LiveQueue {
    /// Zero-filled storage; `buf[..end]` is in use.
    pub(super) buf: Vec<u8>,
    end: usize,
    entries: Vec<Entry>,
    read: usize,
    /// Start of the open packet: `buf[open..end]` (empty when `open == end`).
    pub(super) open: usize,
}

impl LiveQueue {
    pub(super) fn with_capacity(max_packet_len: usize) -> LiveQueue {
        LiveQueue {
            buf: vec![0; max_packet_len * LIVE_QUEUE_PACKETS],
            end: 0,
            entries: Vec::with_capacity(LIVE_QUEUE_PACKETS * 2),
            read: 0,
            open: 0,
        }
    }

    /// Once every sealed packet is taken, move the open packet (if any) to
    /// the front, so the buffer does not grow while a feed never pauses.
    pub(super) fn compact(&mut self) {
        if self.read < self.entries.len() || self.read == 0 {
            return;
        }
        self.buf.copy_within(self.open..self.end, 0);
        self.end -= self.open;
        self.open = 0;
        self.entries.clear();
        self.read = 0;
    }

    /// `len` more bytes at the end, to write into (grows the storage only if
    /// more than `LIVE_QUEUE_PACKETS` packets wait, which a caller that
    /// transmits every loop iteration never makes happen).
    #[inline]
    pub(super) fn extend(&mut self, len: usize) -> &mut [u8] {
        let at = self.end;
        if at + len > self.buf.len() {
            self.buf.resize((at + len).max(self.buf.len() * 2), 0);
        }
        self.end += len;
        &mut self.buf[at..at + len]
    }

    /// Bytes of the open packet (0: none).
    pub(super) fn open_len(&self) -> usize {
        self.end - self.open
    }

    /// The open packet's bytes.
    pub(super) fn open_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.open..self.end]
    }

    /// Seal the open packet as it stands.
    pub(super) fn seal_open(&mut self) {
        self.entries.push(Entry { start: self.open, len: self.open_len() });
        self.open = self.end;
    }

    /// Queue a complete packet (control packets; the open packet must be empty).
    pub(super) fn push(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.open_len(), 0, "control packets go between data packets");
        self.compact();
        self.extend(bytes.len()).copy_from_slice(bytes);
        self.seal_open();
    }

    /// The next sealed packet, stamped with `send_time` and its CRC.
    pub(super) fn pop(&mut self, send_time: u64) -> Option<&[u8]> {
        let e = *self.entries.get(self.read)?;
        self.read += 1;
        let mut p = Packet::new_unchecked(&mut self.buf[e.start..e.start + e.len]);
        p.set_send_time(send_time);
        p.fill_crc();
        Some(&self.buf[e.start..e.start + e.len])
    }

    pub(super) fn queued(&self) -> usize {
        self.entries.len() - self.read
    }
}
