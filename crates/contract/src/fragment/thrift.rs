//! A reader of Thrift's compact protocol that trusts nothing it reads: every length is checked
//! against the bytes that remain before it is used, nesting is bounded, and nothing is
//! allocated. The guard ([`super::guard`]) walks footers and page headers with it before the
//! parquet crate decodes them, because that decoder sizes buffers from declared lengths.

/// Deepest nesting of structs, lists and maps walked (a Parquet footer nests 5 deep).
const MAX_DEPTH: u32 = 16;

/// Thrift compact type codes.
pub(crate) const BOOL_TRUE: u8 = 1;
pub(crate) const BOOL_FALSE: u8 = 2;
pub(crate) const I32: u8 = 5;
pub(crate) const LIST: u8 = 9;
pub(crate) const STRUCT: u8 = 12;

pub(crate) type Result<T> = std::result::Result<T, String>;

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn byte(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.pos).ok_or("thrift: ends early")?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn skip_bytes(&mut self, n: u64) -> Result<()> {
        if n > self.remaining() as u64 {
            return Err(format!("thrift: a length of {n} bytes runs past the end"));
        }
        self.pos += n as usize;
        Ok(())
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("thrift: a varint longer than 10 bytes".into())
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        i32::try_from(self.i64()?).map_err(|_| "thrift: an i32 out of range".into())
    }

    /// The next field of a struct: `None` at its end, else the field id and type.
    pub(crate) fn field(&mut self, last_id: &mut i16) -> Result<Option<(i16, u8)>> {
        let header = self.byte()?;
        if header == 0 {
            return Ok(None);
        }
        let kind = header & 0x0f;
        let delta = header >> 4;
        let id = if delta == 0 {
            i16::try_from(self.i64()?).map_err(|_| "thrift: a field id out of range")?
        } else {
            last_id.checked_add(i16::from(delta)).ok_or("thrift: a field id out of range")?
        };
        *last_id = id;
        Ok(Some((id, kind)))
    }

    /// A list header: its element type and size, the size no larger than the bytes left (every
    /// element takes at least one byte).
    pub(crate) fn list(&mut self) -> Result<(u8, usize)> {
        let header = self.byte()?;
        let kind = header & 0x0f;
        let size = match header >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        if size > self.remaining() as u64 {
            return Err(format!("thrift: a list of {size} elements in {} bytes", self.remaining()));
        }
        Ok((kind, size as usize))
    }

    /// Skips a value of compact type `kind`, nested at most [`MAX_DEPTH`] deep.
    pub(crate) fn skip(&mut self, kind: u8, depth: u32) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err("thrift: nested too deeply".into());
        }
        match kind {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            3 => self.byte().map(drop),
            4..=6 => self.varint().map(drop),
            7 => self.skip_bytes(8),
            8 => {
                let n = self.varint()?;
                self.skip_bytes(n)
            }
            LIST | 10 => {
                let (element, size) = self.list()?;
                for _ in 0..size {
                    self.skip_element(element, depth + 1)?;
                }
                Ok(())
            }
            11 => {
                let size = self.varint()?;
                if size == 0 {
                    return Ok(());
                }
                if size > self.remaining() as u64 {
                    return Err("thrift: a map larger than its bytes".into());
                }
                let kinds = self.byte()?;
                for _ in 0..size {
                    self.skip_element(kinds >> 4, depth + 1)?;
                    self.skip_element(kinds & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            STRUCT => self.skip_struct(depth + 1),
            other => Err(format!("thrift: unknown type {other}")),
        }
    }

    /// A list's or map's element: booleans there take one byte each.
    fn skip_element(&mut self, kind: u8, depth: u32) -> Result<()> {
        match kind {
            BOOL_TRUE | BOOL_FALSE => self.byte().map(drop),
            _ => self.skip(kind, depth),
        }
    }

    pub(crate) fn skip_struct(&mut self, depth: u32) -> Result<()> {
        let mut last = 0;
        while let Some((_, kind)) = self.field(&mut last)? {
            self.skip(kind, depth)?;
        }
        Ok(())
    }

    /// An i32 field's value, after checking the field's type.
    pub(crate) fn i32_field(&mut self, kind: u8, name: &str) -> Result<i32> {
        if kind != I32 {
            return Err(format!("thrift: {name} is not an i32"));
        }
        self.i32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_end_and_deep_nesting_are_refused() {
        // A binary field of 2^40 bytes in a 4-byte buffer.
        let mut r = Reader::new(&[0x18, 0x80, 0x80, 0x80]);
        let mut last = 0;
        let (_, kind) = r.field(&mut last).unwrap().unwrap();
        assert!(r.skip(kind, 0).is_err());
        // A list that declares more elements than bytes.
        assert!(Reader::new(&[0xf5, 0xff, 0xff, 0x03]).list().is_err());
        // Structs nested 100 deep.
        let nested: Vec<u8> = std::iter::repeat_n(0x1c, 100).chain(std::iter::repeat_n(0, 101)).collect();
        assert!(Reader::new(&nested).skip_struct(0).unwrap_err().contains("deeply"));
        // Ten continuation bytes: no varint.
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
    }
}
