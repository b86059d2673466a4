//! Low-level pieces of the table format: block handles, the per-block trailer (compression
//! type and checksum), block compression, and the fixed-size footer.
//!
//! See `docs/format/sstable.md` for the byte-exact description.

use crate::checksum::{crc32c, crc32c_extend, mask, unmask};
use crate::coding::{get_fixed32, get_fixed64, put_fixed32, put_fixed64, put_varint64, Decoder};
use crate::error::{Error, IoContext, Result};
use crate::fs::{RandomAccessFile, WritableFile};
use crate::options::CompressionType;
use bytes::Bytes;

/// Magic number at the very end of every table: `u64::from_le_bytes(*b"STRATAST")`
/// (`0x5453_4154_4152_5453`), in the family of the log magics `STRATAWL` / `STRATAMF`.
pub const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"STRATAST");

/// The table format version this build writes. Version 2 differs from 1 only in the
/// filter block's layout (blocked bloom; see `docs/format/sstable.md`); both are read.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest table format version this build reads.
pub const MIN_READ_VERSION: u32 = 1;

/// Bytes after every block: compression type (1) + masked CRC32C (4).
pub const BLOCK_TRAILER_LEN: usize = 5;

/// Size of the footer: three handles as fixed64 pairs (48), version (4), checksum (4),
/// magic (8).
pub const FOOTER_LEN: usize = 64;

/// Upper bound on the decompressed size of one block; larger claims are corruption.
pub const MAX_BLOCK_SIZE: usize = 64 << 20;

/// Where a block lives in the file: its offset and its size *without* the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct BlockHandle {
    /// Offset of the first byte of the block.
    pub offset: u64,
    /// Stored (possibly compressed) size of the block, excluding the 5-byte trailer.
    pub size: u64,
}

impl BlockHandle {
    /// The handle used in the footer for a block that is absent (no filter).
    pub const EMPTY: BlockHandle = BlockHandle { offset: 0, size: 0 };

    /// True if this is [`BlockHandle::EMPTY`].
    pub fn is_empty(&self) -> bool {
        *self == Self::EMPTY
    }

    /// Appends the varint encoding (`offset varint | size varint`), as stored in index
    /// blocks.
    pub fn encode_to(&self, dst: &mut Vec<u8>) {
        put_varint64(dst, self.offset);
        put_varint64(dst, self.size);
    }

    /// Decodes a varint-encoded handle that must occupy all of `src`.
    pub fn decode(src: &[u8]) -> Option<BlockHandle> {
        let mut d = Decoder::new(src);
        let offset = d.varint64()?;
        let size = d.varint64()?;
        d.is_empty().then_some(BlockHandle { offset, size })
    }

    /// Offset one past the block's trailer, if it does not overflow.
    pub fn end_with_trailer(&self) -> Option<u64> {
        self.offset
            .checked_add(self.size)?
            .checked_add(BLOCK_TRAILER_LEN as u64)
    }
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// The bloom filter block, or [`BlockHandle::EMPTY`] if the table has none.
    pub filter: BlockHandle,
    /// The index block.
    pub index: BlockHandle,
    /// The properties block.
    pub properties: BlockHandle,
}

impl Footer {
    /// The [`FOOTER_LEN`] bytes of the footer, for format [`FORMAT_VERSION`].
    pub fn encode(&self) -> Vec<u8> {
        self.encode_version(FORMAT_VERSION)
    }

    /// The footer bytes naming format `version` (the builder writes older versions only
    /// in tests).
    pub(crate) fn encode_version(&self, version: u32) -> Vec<u8> {
        let mut buf = Vec::with_capacity(FOOTER_LEN);
        for h in [self.filter, self.index, self.properties] {
            put_fixed64(&mut buf, h.offset);
            put_fixed64(&mut buf, h.size);
        }
        put_fixed32(&mut buf, version);
        let crc = mask(crc32c(&buf));
        put_fixed32(&mut buf, crc);
        put_fixed64(&mut buf, TABLE_MAGIC);
        debug_assert_eq!(buf.len(), FOOTER_LEN);
        buf
    }

    /// Decodes and validates the footer `buf` (the last [`FOOTER_LEN`] bytes of a file of
    /// `file_len` bytes).
    ///
    /// Checks, in order: the magic number, the checksum, the format version (a
    /// checksum-valid footer of another version is [`Error::UnsupportedVersion`]), and that
    /// every handle lies inside the file before the footer.
    pub fn decode(buf: &[u8], file_name: &str, file_len: u64) -> Result<Footer> {
        let footer_offset = file_len.saturating_sub(FOOTER_LEN as u64);
        let corrupt = |at: u64, reason: String| Error::corruption(file_name, at, reason);
        if buf.len() != FOOTER_LEN || file_len < FOOTER_LEN as u64 {
            return Err(corrupt(
                0,
                format!("file of {file_len} bytes is too short to hold a table footer"),
            ));
        }
        let magic = buf.get(56..).and_then(get_fixed64).unwrap_or(0);
        if magic != TABLE_MAGIC {
            return Err(corrupt(
                footer_offset + 56,
                format!("bad table magic {magic:#018x} (not a strata table?)"),
            ));
        }
        let stored = buf.get(52..).and_then(get_fixed32).unwrap_or(0);
        let actual = buf.get(..52).map(crc32c).unwrap_or(0);
        if unmask(stored) != actual {
            return Err(corrupt(
                footer_offset,
                "footer checksum mismatch".to_string(),
            ));
        }
        let version = buf.get(48..).and_then(get_fixed32).unwrap_or(0);
        if !(MIN_READ_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                file: file_name.to_string(),
                version,
            });
        }
        let mut d = Decoder::new(buf);
        let mut handle = |what: &str, may_be_empty: bool| -> Result<BlockHandle> {
            let offset = d.fixed64().unwrap_or(u64::MAX);
            let size = d.fixed64().unwrap_or(u64::MAX);
            let h = BlockHandle { offset, size };
            if may_be_empty && h.is_empty() {
                return Ok(h);
            }
            match h.end_with_trailer() {
                Some(end) if end <= footer_offset => Ok(h),
                _ => Err(corrupt(
                    footer_offset,
                    format!("{what} handle (offset {offset}, size {size}) lies outside the file"),
                )),
            }
        };
        let filter = handle("filter", true)?;
        let index = handle("index", false)?;
        let properties = handle("properties", false)?;
        Ok(Footer {
            filter,
            index,
            properties,
        })
    }
}

thread_local! {
    /// Zstd contexts kept per thread: creating one costs far more than compressing a
    /// 4 KiB block (it allocates and clears about a megabyte).
    static ZSTD_CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `zstd::bulk::compress` with this thread's context.
fn zstd_compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD_CCTX.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return zstd::bulk::compress(raw, level);
        };
        if !matches!(&*slot, Some((l, _)) if *l == level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match slot.as_mut() {
            Some((_, c)) => c.compress(raw),
            None => zstd::bulk::compress(raw, level),
        }
    })
}

/// `zstd::bulk::decompress` with this thread's context.
fn zstd_decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_DCTX.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return zstd::bulk::decompress(payload, capacity);
        };
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(payload, capacity),
            None => zstd::bulk::decompress(payload, capacity),
        }
    })
}

/// Compresses `raw` as `compression` asks, appends it and its trailer to `file` at `*offset`
/// and advances `*offset`. Returns the block's handle.
///
/// The block is stored uncompressed if compression does not save at least
/// `min_saving_permille` thousandths of its size (at most all of it) and one byte (or
/// fails).
pub fn write_block(
    file: &mut dyn WritableFile,
    file_name: &str,
    offset: &mut u64,
    raw: &[u8],
    compression: CompressionType,
    zstd_level: i32,
    min_saving_permille: u16,
) -> Result<BlockHandle> {
    let compressed: Option<Vec<u8>> = match compression {
        CompressionType::None => None,
        CompressionType::Lz4 => Some(lz4_flex::block::compress_prepend_size(raw)),
        CompressionType::Zstd => match zstd_compress(raw, zstd_level) {
            Ok(c) => {
                let mut out = Vec::with_capacity(4 + c.len());
                put_fixed32(&mut out, raw.len() as u32);
                out.extend_from_slice(&c);
                Some(out)
            }
            Err(e) => {
                tracing::warn!(file = file_name, error = %e, "zstd compression failed; storing block uncompressed");
                None
            }
        },
    };
    let (contents, ctype): (&[u8], CompressionType) = match &compressed {
        Some(c)
            if raw.len() <= MAX_BLOCK_SIZE
                && c.len()
                    < raw.len() - raw.len() * usize::from(min_saving_permille.min(1000)) / 1000 =>
        {
            (c, compression)
        }
        _ => (raw, CompressionType::None),
    };
    let type_byte = ctype as u8;
    let crc = mask(crc32c_extend(crc32c(contents), &[type_byte]));
    let mut trailer = [0u8; BLOCK_TRAILER_LEN];
    trailer[0] = type_byte;
    trailer[1..].copy_from_slice(&crc.to_le_bytes());
    let handle = BlockHandle {
        offset: *offset,
        size: contents.len() as u64,
    };
    file.append(contents)
        .and_then(|()| file.append(&trailer))
        .context(|| format!("writing block at offset {} of {file_name}", *offset))?;
    *offset += (contents.len() + BLOCK_TRAILER_LEN) as u64;
    Ok(handle)
}

/// Reads the block at `handle` with its trailer in one positioned read, verifies the
/// checksum and decompresses it. Every problem with the bytes is an [`Error::Corruption`] at
/// `handle.offset`; I/O failures are [`Error::Io`] naming the file.
pub fn read_block(
    file: &dyn RandomAccessFile,
    file_name: &str,
    handle: BlockHandle,
) -> Result<Vec<u8>> {
    let total = block_len_with_trailer(file.len(), file_name, handle)?;
    let buf = file
        .read_at(handle.offset, total)
        .context(|| format!("reading block at offset {} of {file_name}", handle.offset))?;
    decode_block(buf, file_name, handle)
}

/// The bytes the block at `handle` occupies with its trailer, checked against the file's
/// length and the block size limit.
pub fn block_len_with_trailer(
    file_len: u64,
    file_name: &str,
    handle: BlockHandle,
) -> Result<usize> {
    let corrupt = |reason: String| Error::corruption(file_name, handle.offset, reason);
    let end = handle
        .end_with_trailer()
        .filter(|&e| e <= file_len)
        .ok_or_else(|| {
            corrupt(format!(
                "block (offset {}, size {}) extends past the end of the file ({file_len} bytes)",
                handle.offset, handle.size
            ))
        })?;
    let total = usize::try_from(end - handle.offset)
        .map_err(|_| corrupt("block size does not fit in memory".to_string()))?;
    if total - BLOCK_TRAILER_LEN > MAX_BLOCK_SIZE {
        return Err(corrupt(format!("block size {} is absurd", handle.size)));
    }
    Ok(total)
}

/// Verifies and decompresses the block at `handle` given its stored bytes with the
/// trailer (as [`read_block`] reads them, or as cut from a larger read).
pub fn decode_block(mut buf: Vec<u8>, file_name: &str, handle: BlockHandle) -> Result<Vec<u8>> {
    let (ctype, n) = verify_block(&buf, file_name, handle)?;
    match ctype {
        CompressionType::None => {
            // Cut the trailer off in place: no second allocation per block read.
            buf.truncate(n);
            Ok(buf)
        }
        _ => decompress_block(buf.get(..n).unwrap_or_default(), ctype, file_name, handle),
    }
}

/// As [`decode_block`] for stored bytes shared with other blocks (a slice of a readahead
/// window): an uncompressed block is a slice of `buf`, not a copy. The flag is true if
/// the contents are such a slice (false if they were decompressed).
pub fn decode_block_shared(
    buf: Bytes,
    file_name: &str,
    handle: BlockHandle,
) -> Result<(Bytes, bool)> {
    let (ctype, n) = verify_block(&buf, file_name, handle)?;
    match ctype {
        CompressionType::None => Ok((buf.slice(..n), true)),
        _ => decompress_block(buf.get(..n).unwrap_or_default(), ctype, file_name, handle)
            .map(|v| (Bytes::from(v), false)),
    }
}

/// Checks the length and checksum of a block's stored bytes `buf` (with the trailer):
/// its compression type and the length of its stored contents.
fn verify_block(
    buf: &[u8],
    file_name: &str,
    handle: BlockHandle,
) -> Result<(CompressionType, usize)> {
    let corrupt = |reason: String| Error::corruption(file_name, handle.offset, reason);
    let total = usize::try_from(handle.size)
        .ok()
        .and_then(|n| n.checked_add(BLOCK_TRAILER_LEN))
        .ok_or_else(|| corrupt("block size does not fit in memory".to_string()))?;
    if buf.len() != total {
        return Err(corrupt("short read".to_string()));
    }
    let n = total - BLOCK_TRAILER_LEN;
    let type_byte = buf.get(n).copied().unwrap_or(0xff);
    let stored = buf.get(n + 1..).and_then(get_fixed32).unwrap_or(0);
    let actual = crc32c_extend(crc32c(buf.get(..n).unwrap_or_default()), &[type_byte]);
    if unmask(stored) != actual {
        return Err(corrupt("block checksum mismatch".to_string()));
    }
    let ctype = CompressionType::from_u8(type_byte)
        .ok_or_else(|| corrupt(format!("unknown compression type {type_byte}")))?;
    Ok((ctype, n))
}

/// Decompresses the verified stored contents `buf` of a block (a copy if stored as is).
fn decompress_block(
    buf: &[u8],
    ctype: CompressionType,
    file_name: &str,
    handle: BlockHandle,
) -> Result<Vec<u8>> {
    let lz4 = match ctype {
        CompressionType::None => return Ok(buf.to_vec()),
        CompressionType::Lz4 => true,
        CompressionType::Zstd => false,
    };
    let corrupt = |reason: String| Error::corruption(file_name, handle.offset, reason);
    let raw_len =
        get_fixed32(buf).ok_or_else(|| corrupt("compressed block too short".to_string()))? as usize;
    if raw_len > MAX_BLOCK_SIZE {
        return Err(corrupt(format!(
            "decompressed block size {raw_len} is absurd"
        )));
    }
    let payload = buf.get(4..).unwrap_or_default();
    let out = if lz4 {
        lz4_flex::block::decompress(payload, raw_len)
            .map_err(|e| corrupt(format!("lz4 decompression failed: {e}")))?
    } else {
        zstd_decompress(payload, raw_len)
            .map_err(|e| corrupt(format!("zstd decompression failed: {e}")))?
    };
    if out.len() != raw_len {
        return Err(corrupt(format!(
            "decompressed to {} bytes, expected {raw_len}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fs::{FileSystem, MemFs};
    use std::path::Path;

    #[test]
    fn handle_roundtrip() {
        let h = BlockHandle {
            offset: 123_456_789,
            size: 4096,
        };
        let mut b = Vec::new();
        h.encode_to(&mut b);
        assert_eq!(BlockHandle::decode(&b), Some(h));
        b.push(0);
        assert_eq!(BlockHandle::decode(&b), None);
        assert_eq!(BlockHandle::decode(&[0x80]), None);
    }

    #[test]
    fn footer_roundtrip_and_validation() {
        let f = Footer {
            filter: BlockHandle::EMPTY,
            index: BlockHandle {
                offset: 0,
                size: 10,
            },
            properties: BlockHandle {
                offset: 15,
                size: 20,
            },
        };
        let enc = f.encode();
        assert_eq!(enc.len(), FOOTER_LEN);
        let len = 40 + FOOTER_LEN as u64;
        assert_eq!(Footer::decode(&enc, "t", len).unwrap(), f);
        // Handles must lie before the footer.
        assert!(Footer::decode(&enc, "t", len - 1)
            .unwrap_err()
            .is_corruption());
        let mut bad = enc.clone();
        bad[48] = 1;
        let crc = mask(crc32c(&bad[..52]));
        bad[52..56].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Footer::decode(&bad, "t", len).unwrap(),
            f,
            "version 1 still reads"
        );
        for v in [0u8, 3] {
            bad[48] = v;
            let crc = mask(crc32c(&bad[..52]));
            bad[52..56].copy_from_slice(&crc.to_le_bytes());
            assert!(matches!(
                Footer::decode(&bad, "t", len),
                Err(Error::UnsupportedVersion { version, .. }) if version == u32::from(v)
            ));
        }
        let mut bad = enc.clone();
        bad[3] ^= 1;
        assert!(Footer::decode(&bad, "t", len).unwrap_err().is_corruption());
        let mut bad = enc;
        bad[63] ^= 1;
        assert!(Footer::decode(&bad, "t", len).unwrap_err().is_corruption());
    }

    #[test]
    fn a_block_is_compressed_only_when_it_saves_the_asked_share() {
        let fs = MemFs::new();
        let p = Path::new("/blocks");
        let mut w = fs.create(p).unwrap();
        // Incompressible bytes with a compressible stretch: zstd saves a few percent.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut data: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        data[..200].fill(7);
        let mut off = 0;
        let lax = write_block(
            w.as_mut(),
            "b",
            &mut off,
            &data,
            CompressionType::Zstd,
            3,
            4,
        )
        .unwrap();
        let strict = write_block(
            w.as_mut(),
            "b",
            &mut off,
            &data,
            CompressionType::Zstd,
            3,
            125,
        )
        .unwrap();
        let saved = data.len() as u64 - lax.size;
        assert!(
            saved >= 16 && saved < data.len() as u64 / 8,
            "saved {saved}"
        );
        assert_eq!(
            strict.size,
            data.len() as u64,
            "stored raw under the 1/8 rule"
        );
        let r = fs.open(p).unwrap();
        for h in [lax, strict] {
            assert_eq!(read_block(r.as_ref(), "b", h).unwrap(), data);
        }
    }

    #[test]
    fn block_write_read_all_compressions() {
        let fs = MemFs::new();
        let p = Path::new("/blocks");
        let mut w = fs.create(p).unwrap();
        let compressible: Vec<u8> = b"abcdefgh".repeat(500);
        let incompressible: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut off = 0;
        let mut handles = Vec::new();
        for c in [
            CompressionType::None,
            CompressionType::Lz4,
            CompressionType::Zstd,
        ] {
            for data in [&compressible[..], &incompressible[..], &[][..]] {
                let h = write_block(w.as_mut(), "blocks", &mut off, data, c, 3, 125).unwrap();
                if c != CompressionType::None && data.len() == compressible.len() {
                    assert!(h.size < data.len() as u64 / 2, "{c:?} did not compress");
                }
                handles.push((h, data.to_vec()));
            }
        }
        assert_eq!(off, w.len());
        let r = fs.open(p).unwrap();
        for (h, data) in &handles {
            assert_eq!(&read_block(r.as_ref(), "blocks", *h).unwrap(), data);
        }
        // Out-of-range handle.
        let err = read_block(
            r.as_ref(),
            "blocks",
            BlockHandle {
                offset: off,
                size: 1,
            },
        )
        .unwrap_err();
        assert!(err.is_corruption() && err.to_string().contains("blocks"));
    }
}
