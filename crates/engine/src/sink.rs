//! A `Write` sink that cuts what the Parquet writer produces into fixed-size parts, so an
//! output can be streamed to a multipart upload without ever being held whole.

use std::collections::VecDeque;
use std::io::Write;

use bytes::{Bytes, BytesMut};

/// Parts of exactly `part_bytes`, handed out as they fill; the last may be smaller.
///
/// The filling part grows by doubling up to `part_bytes` rather than being allocated whole: most
/// outputs are far smaller than a part, and a Worker's memory is what bounds a run. Each part is
/// handed out as the sole owner of its buffer, so turning it into a `Vec<u8>` for the platform
/// copies nothing.
#[derive(Debug)]
pub struct PartSink {
    part_bytes: usize,
    filling: BytesMut,
    ready: VecDeque<Bytes>,
    written: u64,
}

/// The filling part's first allocation.
const FIRST_ALLOCATION: usize = 64 << 10;

impl PartSink {
    /// A sink that hands out parts of `part_bytes` (the last one smaller).
    pub fn new(part_bytes: usize) -> Self {
        Self { part_bytes, filling: BytesMut::new(), ready: VecDeque::new(), written: 0 }
    }

    /// Makes room for `more` bytes in the filling part, which never grows past a part.
    fn grow(&mut self, more: usize) {
        let (len, capacity) = (self.filling.len(), self.filling.capacity());
        if capacity - len >= more {
            return;
        }
        let target = (2 * capacity).max(len + more).max(FIRST_ALLOCATION).min(self.part_bytes);
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(&self.filling);
        self.filling = grown;
    }

    /// The full parts not yet taken.
    pub fn take_ready(&mut self) -> Vec<Bytes> {
        self.ready.drain(..).collect()
    }

    /// Whether a full part waits to be taken.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Every part not yet taken, the last (partial) one included.
    pub fn take_all(&mut self) -> Vec<Bytes> {
        let mut parts = self.take_ready();
        if !self.filling.is_empty() {
            parts.push(std::mem::take(&mut self.filling).freeze());
        }
        parts
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes held: the filling part and the full ones not yet taken.
    pub fn buffered(&self) -> usize {
        self.filling.len() + self.ready.iter().map(Bytes::len).sum::<usize>()
    }
}

impl Write for PartSink {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let room = self.part_bytes - self.filling.len();
            let (now, rest) = buf.split_at(room.min(buf.len()));
            self.grow(now.len());
            self.filling.extend_from_slice(now);
            if self.filling.len() == self.part_bytes {
                self.ready.push_back(std::mem::take(&mut self.filling).freeze());
            }
            buf = rest;
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_equal_but_the_last() {
        let mut sink = PartSink::new(10);
        sink.write_all(&[1; 7]).unwrap();
        assert!(sink.take_ready().is_empty());
        sink.write_all(&[2; 25]).unwrap();
        let full = sink.take_ready();
        assert_eq!(full.iter().map(Bytes::len).collect::<Vec<_>>(), vec![10, 10, 10]);
        let rest = sink.take_all();
        assert_eq!(rest.iter().map(Bytes::len).collect::<Vec<_>>(), vec![2]);
        assert_eq!(sink.written(), 32);
        let joined: Vec<u8> = full.iter().chain(&rest).flat_map(|b| b.to_vec()).collect();
        assert_eq!(joined, [vec![1; 7], vec![2; 25]].concat());
    }

    #[test]
    fn a_small_output_holds_a_small_buffer_and_a_part_never_more_than_a_part() {
        let part = 1 << 20;
        let mut sink = PartSink::new(part);
        sink.write_all(&[1; 1000]).unwrap();
        assert!(sink.filling.capacity() < part / 4, "{} bytes held for 1000 written", sink.filling.capacity());
        for _ in 0..300 {
            sink.write_all(&[2; 10_000]).unwrap();
            assert!(sink.filling.capacity() <= part, "{}", sink.filling.capacity());
        }
        let parts = sink.take_all();
        assert_eq!(parts.iter().map(Bytes::len).collect::<Vec<_>>(), vec![part, part, 3_001_000 - 2 * part]);
        // The platform takes each part as a `Vec` without a copy: the part owns its buffer.
        let first = parts[0].as_ptr();
        let taken = Vec::from(parts.into_iter().next().unwrap());
        assert_eq!(taken.as_ptr(), first);
    }
}
