//! Parquet files forged byte by byte, for the hostile cases: a file whose every size, count and
//! offset is the caller's to choose, including the ones no writer would produce. One optional
//! INT32 column `x` (more columns and row groups on request), its footer and page headers
//! encoded with a small Thrift compact writer.

/// A file to forge. [`Forge::honest`] is a valid file of three rows; each hostile case changes
/// a field or two.
#[derive(Debug, Clone)]
pub struct Forge {
    /// The file's and the row group's row count, and the column chunk's value count.
    pub rows: i64,
    /// The page's value count.
    pub page_values: i32,
    /// The page's data after its header: definition levels and values.
    pub body: Vec<u8>,
    /// Overrides of the page header's sizes (else the body's length).
    pub uncompressed: Option<i32>,
    pub compressed: Option<i32>,
    /// Parquet's codec (0 none, 1 SNAPPY, 6 ZSTD): SNAPPY frames the body as one literal.
    pub codec: i32,
    /// A Snappy block's declared length, when it should lie.
    pub snappy_length: Option<u64>,
    pub page_type: i32,
    pub encoding: i32,
    /// A statistics value whose declared length is this, in the page header.
    pub statistics_length: Option<u64>,
    /// A dictionary page of this many entries and these bytes, before the data page.
    pub dictionary: Option<(i32, Vec<u8>)>,
    /// Overrides of the column chunk's offsets.
    pub data_page_offset: Option<i64>,
    pub chunk_compressed: Option<i64>,
    /// Leaf columns the schema declares beyond `x` (with no column chunk).
    pub extra_columns: usize,
    /// Groups nested around `x` in the schema.
    pub nesting: usize,
    /// Row groups (each repeating the one column chunk).
    pub row_groups: usize,
    /// Bytes of key-value metadata that pad the footer.
    pub footer_padding: usize,
}

impl Forge {
    /// Three rows, 1, 2, 3, uncompressed, PLAIN.
    pub fn honest() -> Self {
        Self::nulls_and(3, &[1, 2, 3])
    }

    /// `rows` rows: the first `values.len()` hold them, the rest are null. The levels are one
    /// bit-packed run when short, else two RLE runs.
    pub fn nulls_and(rows: i64, values: &[i32]) -> Self {
        let mut levels = Vec::new();
        let present = values.len() as u64;
        if present > 0 {
            varint(&mut levels, present << 1);
            levels.push(1);
        }
        let nulls = rows as u64 - present;
        if nulls > 0 {
            varint(&mut levels, nulls << 1);
            levels.push(0);
        }
        let mut body = (levels.len() as u32).to_le_bytes().to_vec();
        body.extend(levels);
        body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        Forge {
            rows,
            page_values: i32::try_from(rows).unwrap_or(i32::MAX),
            body,
            uncompressed: None,
            compressed: None,
            codec: 0,
            snappy_length: None,
            page_type: 0,
            encoding: 0,
            statistics_length: None,
            dictionary: None,
            data_page_offset: None,
            chunk_compressed: None,
            extra_columns: 0,
            nesting: 0,
            row_groups: 1,
            footer_padding: 0,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut file = b"PAR1".to_vec();
        let chunk_start = file.len() as i64;
        if let Some((entries, bytes)) = &self.dictionary {
            let data = self.framed(bytes, None);
            file.extend(page_header(2, bytes.len() as i32, data.len() as i32, |w| {
                w.field(7, STRUCT);
                w.field(1, I32);
                w.i32(*entries);
                w.field(2, I32);
                w.i32(0);
                w.stop();
            }));
            file.extend(data);
        }
        let data_page = file.len() as i64;
        let data = self.framed(&self.body, self.snappy_length);
        let uncompressed = self.uncompressed.unwrap_or(self.body.len() as i32);
        let compressed = self.compressed.unwrap_or(data.len() as i32);
        file.extend(page_header(self.page_type, uncompressed, compressed, |w| {
            w.field(5, STRUCT);
            w.field(1, I32);
            w.i32(self.page_values);
            w.field(2, I32);
            w.i32(self.encoding);
            w.field(3, I32);
            w.i32(3);
            w.field(4, I32);
            w.i32(3);
            if let Some(len) = self.statistics_length {
                w.field(5, STRUCT);
                w.field(1, BINARY);
                varint(&mut w.out, len);
                w.out.extend_from_slice(b"max");
                w.stop();
            }
            w.stop();
        }));
        file.extend(data);
        let chunk_len = file.len() as i64 - chunk_start;
        let footer = self.footer(chunk_start, data_page, chunk_len);
        file.extend(&footer);
        file.extend((footer.len() as u32).to_le_bytes());
        file.extend(b"PAR1");
        file
    }

    /// The page data as the codec frames it: SNAPPY as one literal (a valid Snappy block).
    fn framed(&self, body: &[u8], declared: Option<u64>) -> Vec<u8> {
        if self.codec != 1 {
            return body.to_vec();
        }
        let mut out = Vec::new();
        varint(&mut out, declared.unwrap_or(body.len() as u64));
        if !body.is_empty() {
            let n = body.len() - 1;
            match n {
                0..60 => out.push((n as u8) << 2),
                60..256 => out.extend([60 << 2, n as u8]),
                _ => {
                    out.push(61 << 2);
                    out.extend((n as u16).to_le_bytes());
                }
            }
            out.extend_from_slice(body);
        }
        out
    }

    fn footer(&self, chunk_start: i64, data_page: i64, chunk_len: i64) -> Vec<u8> {
        let mut w = Thrift::default();
        w.field(1, I32);
        w.i32(2);
        // The schema: a root, `nesting` groups, `x`, the extra leaves.
        w.field(2, LIST);
        w.list(STRUCT, 2 + self.nesting + self.extra_columns);
        let element = |w: &mut Thrift, name: &str, kind: Option<i32>, children: Option<i32>| {
            if let Some(kind) = kind {
                w.field(1, I32);
                w.i32(kind);
            }
            w.field(3, I32);
            w.i32(1);
            w.field(4, BINARY);
            w.binary(name.as_bytes());
            if let Some(children) = children {
                w.field(5, I32);
                w.i32(children);
            }
            w.stop();
        };
        w.begin();
        w.field(4, BINARY);
        w.binary(b"schema");
        w.field(5, I32);
        w.i32(1 + if self.nesting > 0 { 0 } else { self.extra_columns as i32 });
        w.stop();
        for level in 0..self.nesting {
            w.begin();
            element(&mut w, &format!("g{level}"), None, Some(1));
        }
        w.begin();
        element(&mut w, "x", Some(1), None);
        for i in 0..self.extra_columns {
            w.begin();
            element(&mut w, &format!("extra_{i}"), Some(1), None);
        }
        w.field(3, I64);
        w.i64(self.rows);
        w.field(4, LIST);
        w.list(STRUCT, self.row_groups);
        for _ in 0..self.row_groups {
            w.begin();
            w.field(1, LIST);
            w.list(STRUCT, 1);
            w.begin();
            w.field(2, I64);
            w.i64(chunk_start);
            w.field(3, STRUCT);
            w.field(1, I32);
            w.i32(1);
            w.field(2, LIST);
            w.list(I32, 2);
            w.i32(0);
            w.i32(3);
            w.field(3, LIST);
            w.list(BINARY, 1);
            w.binary(b"x");
            w.field(4, I32);
            w.i32(self.codec);
            w.field(5, I64);
            w.i64(self.rows);
            w.field(6, I64);
            w.i64(chunk_len);
            w.field(7, I64);
            w.i64(self.chunk_compressed.unwrap_or(chunk_len));
            w.field(9, I64);
            w.i64(self.data_page_offset.unwrap_or(data_page));
            if self.dictionary.is_some() {
                w.field(11, I64);
                w.i64(chunk_start);
            }
            w.stop();
            w.stop();
            w.field(2, I64);
            w.i64(chunk_len);
            w.field(3, I64);
            w.i64(self.rows);
            w.stop();
        }
        if self.footer_padding > 0 {
            w.field(5, LIST);
            w.list(STRUCT, 1);
            w.begin();
            w.field(1, BINARY);
            w.binary(b"padding");
            w.field(2, BINARY);
            w.binary(&vec![b'p'; self.footer_padding]);
            w.stop();
        }
        w.stop();
        w.out
    }
}

fn page_header(kind: i32, uncompressed: i32, compressed: i32, rest: impl FnOnce(&mut Thrift)) -> Vec<u8> {
    let mut w = Thrift::default();
    w.field(1, I32);
    w.i32(kind);
    w.field(2, I32);
    w.i32(uncompressed);
    w.field(3, I32);
    w.i32(compressed);
    rest(&mut w);
    w.stop();
    w.out
}

const I32: u8 = 5;
const I64: u8 = 6;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const STRUCT: u8 = 12;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Thrift's compact protocol, written: field ids by delta within each struct.
#[derive(Default)]
struct Thrift {
    out: Vec<u8>,
    last: Vec<i16>,
    current: i16,
}

impl Thrift {
    fn field(&mut self, id: i16, kind: u8) {
        let delta = id - self.current;
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | kind);
        } else {
            self.out.push(kind);
            self.i64(id.into());
        }
        self.current = id;
        if kind == STRUCT {
            self.begin_nested();
        }
    }

    /// A struct inside a list: its own field ids.
    fn begin(&mut self) {
        self.begin_nested();
    }

    fn begin_nested(&mut self) {
        self.last.push(self.current);
        self.current = 0;
    }

    fn stop(&mut self) {
        self.out.push(0);
        self.current = self.last.pop().unwrap_or(0);
    }

    fn i32(&mut self, v: i32) {
        self.i64(v.into());
    }

    fn i64(&mut self, v: i64) {
        varint(&mut self.out, ((v << 1) ^ (v >> 63)) as u64);
    }

    fn binary(&mut self, b: &[u8]) {
        varint(&mut self.out, b.len() as u64);
        self.out.extend_from_slice(b);
    }

    fn list(&mut self, kind: u8, size: usize) {
        if size < 15 {
            self.out.push(((size as u8) << 4) | kind);
        } else {
            self.out.push(0xf0 | kind);
            varint(&mut self.out, size as u64);
        }
    }
}
