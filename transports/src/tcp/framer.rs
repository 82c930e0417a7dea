//! Stream framing: a bounded receive buffer that a socket reads straight into,
//! cut into whole packets with [`tickwire_core::wire::frame_len`].

use std::io::{self, Read};

use tickwire_core::wire::{DecodeError, frame_len};

/// A fixed-size receive buffer holding the bytes of a stream that have not
/// been handed up yet: zero or more whole packets, then at most one partial
/// packet. It never grows: a packet longer than `max_packet` is a framing
/// error, so a peer cannot make us buffer without bound. Packets are handed up
/// as slices of the buffer itself (no per-packet allocation).
#[derive(Debug)]
pub(crate) struct FrameBuf {
    buf: Box<[u8]>,
    /// First byte not yet handed up.
    start: usize,
    /// One past the last byte received.
    end: usize,
    /// Largest packet accepted.
    max_packet: usize,
}

/// What one [`FrameBuf::fill_from`] call saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// This many bytes were read.
    Read(usize),
    /// The peer closed its side of the stream.
    Eof,
}

impl FrameBuf {
    /// A buffer of `capacity` bytes for packets of at most `max_packet` bytes.
    /// `capacity` is raised to `max_packet` if below it, so a whole packet fits.
    pub(crate) fn new(capacity: usize, max_packet: usize) -> FrameBuf {
        let capacity = capacity.max(max_packet);
        FrameBuf { buf: vec![0; capacity].into_boxed_slice(), start: 0, end: 0, max_packet }
    }

    /// Forget everything buffered (a new connection starts with a clean stream).
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Bytes buffered and not handed up yet.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// One `read` from `src` into the free space at the end of the buffer,
    /// first moving a partial packet to the front when the space left could
    /// not hold a whole packet. There is always room: the partial packet is
    /// shorter than `max_packet`, which is at most the capacity.
    pub(crate) fn fill_from<R: Read>(&mut self, src: &mut R) -> io::Result<Fill> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < self.max_packet && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Only possible if the caller did not drain whole packets first.
            return Err(io::Error::other("receive buffer full of unframed bytes"));
        }
        match src.read(&mut self.buf[self.end..]) {
            Ok(0) => Ok(Fill::Eof),
            Ok(n) => {
                self.end += n;
                Ok(Fill::Read(n))
            }
            Err(e) => Err(e),
        }
    }

    /// At the end of the stream: the error for a packet cut short, if part of
    /// one is buffered (call after draining whole packets).
    /// One read step of a connection's receive loop: reads what `src` has
    /// into the buffer. `Ok` after data, an interrupted call, or `WouldBlock`
    /// (which clears `readable`, the edge-triggered readiness flag); `Err`
    /// with the reason when the connection must be closed (end of stream —
    /// malformed if a packet was cut short — or an I/O error).
    pub(crate) fn read_step<R: Read>(
        &mut self,
        src: &mut R,
        readable: &mut bool,
    ) -> Result<(), crate::DisconnectReason> {
        match self.fill_from(src) {
            Ok(Fill::Read(_)) => Ok(()),
            Ok(Fill::Eof) => Err(match self.truncation() {
                Some(e) => crate::DisconnectReason::Malformed(e),
                None => crate::DisconnectReason::Closed,
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(crate::DisconnectReason::Io(e.to_string())),
        }
    }

    pub(crate) fn truncation(&self) -> Option<DecodeError> {
        let have = self.end - self.start;
        if have == 0 {
            return None;
        }
        let need = match frame_len(&self.buf[self.start..self.end]) {
            Ok(Some(len)) => len,
            Ok(None) => tickwire_core::wire::HEADER_LEN,
            Err(e) => return Some(e),
        };
        Some(DecodeError::Truncated { need, have })
    }

    /// The next whole packet, if one is buffered. A bad magic, a bad version or
    /// a length above `max_packet` is an error: the stream cannot be resynchronised,
    /// and the caller drops the connection.
    pub(crate) fn next_packet(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        let avail = &self.buf[self.start..self.end];
        let len = match frame_len(avail)? {
            None => return Ok(None),
            Some(len) => len,
        };
        if len > self.max_packet {
            return Err(DecodeError::Malformed(
                "packet longer than the transport's max_packet_len",
            ));
        }
        if avail.len() < len {
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// Hand every whole packet buffered to `on_packet`, in order, until the
    /// buffer holds no whole packet (`Ok`) or a framing error ends the stream
    /// (that error, as [`Self::next_packet`] returns it).
    pub(crate) fn drain(&mut self, mut on_packet: impl FnMut(&[u8])) -> Result<(), DecodeError> {
        while let Some(packet) = self.next_packet()? {
            on_packet(packet);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::SeqNo;
    use tickwire_core::wire::{HEADER_LEN, PacketKind, PacketRepr};

    fn heartbeat(seq: u64) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        PacketRepr {
            kind: PacketKind::Heartbeat,
            flags: 0,
            epoch: 7,
            first_seq: SeqNo(seq),
            count: 0,
            send_time: 0,
            payload_len: 0,
        }
        .emit_bare(&mut b);
        b
    }

    /// A reader that hands out its bytes in chunks of a fixed size.
    struct Chunks<'a> {
        data: &'a [u8],
        chunk: usize,
    }
    impl Read for Chunks<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn frames_across_arbitrary_read_boundaries() {
        let mut stream = Vec::new();
        for i in 0..50 {
            stream.extend_from_slice(&heartbeat(i));
        }
        for chunk in [1, 3, 39, 40, 41, 97, 4096] {
            // A capacity of one packet forces compaction on every packet.
            let mut fb = FrameBuf::new(HEADER_LEN, HEADER_LEN);
            let mut src = Chunks { data: &stream, chunk };
            let mut got = Vec::new();
            loop {
                while let Some(p) = fb.next_packet().unwrap() {
                    got.extend_from_slice(p);
                }
                match fb.fill_from(&mut src).unwrap() {
                    Fill::Eof => break,
                    Fill::Read(_) => {}
                }
            }
            assert_eq!(got, stream, "chunk {chunk}");
            assert_eq!(fb.buffered(), 0);
        }
    }

    #[test]
    fn truncation_at_end_of_stream() {
        let hb = heartbeat(1);
        let mut fb = FrameBuf::new(1024, 100);
        assert_eq!(fb.truncation(), None);
        fb.fill_from(&mut Chunks { data: &hb[..10], chunk: 100 }).unwrap();
        assert_eq!(fb.next_packet(), Ok(None));
        assert_eq!(fb.truncation(), Some(DecodeError::Truncated { need: 40, have: 10 }));

        let mut long = heartbeat(1).to_vec();
        long[32..36].copy_from_slice(&20u32.to_le_bytes());
        long.extend_from_slice(&[0; 5]);
        let mut fb = FrameBuf::new(1024, 100);
        fb.fill_from(&mut Chunks { data: &long, chunk: 100 }).unwrap();
        assert_eq!(fb.next_packet(), Ok(None));
        assert_eq!(fb.truncation(), Some(DecodeError::Truncated { need: 60, have: 45 }));
    }

    #[test]
    fn rejects_garbage_and_oversized() {
        let mut fb = FrameBuf::new(1024, 100);
        let mut src = Chunks { data: b"GET / HTTP/1.1\r\n", chunk: 100 };
        fb.fill_from(&mut src).unwrap();
        assert!(matches!(fb.next_packet(), Err(DecodeError::BadMagic(_))));

        let mut big = heartbeat(1);
        big[32..36].copy_from_slice(&200u32.to_le_bytes());
        let mut fb = FrameBuf::new(1024, 100);
        fb.fill_from(&mut Chunks { data: &big, chunk: 100 }).unwrap();
        assert!(matches!(fb.next_packet(), Err(DecodeError::Malformed(_))));

        let mut absurd = heartbeat(1);
        absurd[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut fb = FrameBuf::new(1024, 100);
        fb.fill_from(&mut Chunks { data: &absurd, chunk: 100 }).unwrap();
        assert!(matches!(fb.next_packet(), Err(DecodeError::Malformed(_))));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// A reader that hands out its bytes in the given chunk sizes, then EOF.
        struct Script {
            data: Vec<u8>,
            at: usize,
            chunks: Vec<usize>,
            k: usize,
        }
        impl Read for Script {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let want = self.chunks[self.k % self.chunks.len()].max(1);
                self.k += 1;
                let n = want.min(out.len()).min(self.data.len() - self.at);
                out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
                self.at += n;
                Ok(n)
            }
        }

        /// Frame everything `src` yields; stops at EOF or the first error.
        fn frame_all(fb: &mut FrameBuf, src: &mut Script) -> (Vec<Vec<u8>>, Option<DecodeError>) {
            let mut got = Vec::new();
            loop {
                loop {
                    match fb.next_packet() {
                        Ok(Some(p)) => got.push(p.to_vec()),
                        Ok(None) => break,
                        Err(e) => return (got, Some(e)),
                    }
                }
                match fb.fill_from(src).unwrap() {
                    Fill::Eof => return (got, fb.truncation()),
                    Fill::Read(_) => {}
                }
            }
        }

        fn packet(seq: u64, payload: usize) -> Vec<u8> {
            let mut b = vec![0u8; HEADER_LEN + payload];
            let repr = PacketRepr {
                kind: PacketKind::Data,
                flags: 0,
                epoch: 1,
                first_seq: SeqNo(seq),
                count: 0,
                send_time: 0,
                payload_len: payload,
            };
            let mut p = tickwire_core::wire::Packet::new_unchecked(&mut b[..]);
            repr.emit(&mut p);
            for (i, x) in p.payload_mut().iter_mut().enumerate() {
                *x = (seq as usize + i) as u8;
            }
            p.fill_crc();
            b
        }

        proptest! {
            /// Valid packets come out whole and in order, whatever the read sizes.
            #[test]
            fn any_chunking_gives_the_packets_back(
                sizes in proptest::collection::vec(0usize..300, 1..40),
                chunks in proptest::collection::vec(1usize..700, 1..10),
                capacity in 340usize..2000,
            ) {
                let packets: Vec<Vec<u8>> =
                    sizes.iter().enumerate().map(|(i, &n)| packet(i as u64, n)).collect();
                let mut src = Script { data: packets.concat(), at: 0, chunks, k: 0 };
                let mut fb = FrameBuf::new(capacity, HEADER_LEN + 300);
                let (got, err) = frame_all(&mut fb, &mut src);
                prop_assert_eq!(err, None);
                prop_assert_eq!(got, packets);
            }

            /// Arbitrary bytes never panic; whatever is framed before the
            /// first error is a prefix of the input.
            #[test]
            fn garbage_never_panics(
                mut data in proptest::collection::vec(any::<u8>(), 0..3000),
                magic_first in any::<bool>(),
                chunks in proptest::collection::vec(1usize..500, 1..5),
            ) {
                if magic_first && data.len() >= 3 {
                    // Give the framer a chance to get past the magic check.
                    data[0] = 0x54;
                    data[1] = 0x57;
                    data[2] = 1;
                }
                let mut src = Script { data: data.clone(), at: 0, chunks, k: 0 };
                let mut fb = FrameBuf::new(1024, 512);
                let (got, _) = frame_all(&mut fb, &mut src);
                let framed = got.concat();
                prop_assert!(data.starts_with(&framed));
            }
        }
    }
}
