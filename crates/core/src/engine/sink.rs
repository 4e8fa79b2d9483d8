//! A `Write` sink that cuts what the Parquet writer produces into fixed-size parts, so an
//! output can be streamed to a multipart upload without ever being held whole.

use std::collections::VecDeque;
use std::io::Write;

use bytes::{Bytes, BytesMut};

/// Parts of exactly `part_bytes`, handed out as they fill; the last may be smaller.
#[derive(Debug)]
pub struct PartSink {
    part_bytes: usize,
    filling: BytesMut,
    ready: VecDeque<Bytes>,
    written: u64,
}

impl PartSink {
    pub fn new(part_bytes: usize) -> Self {
        Self { part_bytes, filling: BytesMut::with_capacity(part_bytes), ready: VecDeque::new(), written: 0 }
    }

    /// The full parts not yet taken.
    pub fn take_ready(&mut self) -> Vec<Bytes> {
        self.ready.drain(..).collect()
    }

    /// Every part not yet taken, the last (partial) one included.
    pub fn take_all(&mut self) -> Vec<Bytes> {
        let mut parts = self.take_ready();
        if !self.filling.is_empty() {
            parts.push(self.filling.split().freeze());
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
            self.filling.extend_from_slice(now);
            if self.filling.len() == self.part_bytes {
                self.ready.push_back(self.filling.split().freeze());
                self.filling.reserve(self.part_bytes);
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
}
