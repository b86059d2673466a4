//! Helpers shared by the fuzz targets in `fuzz_targets/` and the seed generator in
//! `examples/make_seeds.rs`.
//!
//! Every Strata file is checksummed, so random bytes almost never get past the first CRC
//! check. To reach the decoding logic behind the checksums, most targets take a mode byte
//! and may *reseal* the input first: recompute every checksum they can locate so that the
//! fuzzer's mutations of lengths, counts, offsets and flags are seen by the decoder as if a
//! buggy (or hostile) writer had produced them. The unsealed mode keeps the checksum paths
//! themselves under test.

use std::path::Path;
use std::sync::Arc;

use strata_kv::checksum::{crc32c, crc32c_extend, mask};
use strata_kv::coding::{get_fixed32, get_fixed64};
use strata_kv::fs::{FileSystem, MemFs};
use strata_kv::iterator::InternalIterator;
use strata_kv::sstable::block::{Block, BlockIter};
use strata_kv::sstable::format::{read_block, FOOTER_LEN};
use strata_kv::sstable::BlockHandle;

/// Separator the targets use to split one input into several records or files; also in
/// the dictionary of seeds, so the fuzzer finds it at once.
pub const SEP: &[u8] = b"\xfe\xed";

/// Splits `data` at every [`SEP`].
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEP.len()).position(|w| w == SEP) {
        out.push(&rest[..i]);
        rest = &rest[i + SEP.len()..];
    }
    out.push(rest);
    out
}

/// Joins parts with [`SEP`] (the inverse of [`split`], for seeds).
pub fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEP);
        }
        out.extend_from_slice(p);
    }
    out
}

/// Writes `bytes` as the (synced) file `path` of `fs`.
pub fn put_file(fs: &MemFs, path: &Path, bytes: &[u8]) {
    let Ok(mut f) = fs.create(path) else {
        panic!("MemFs refused to create {}", path.display());
    };
    if f.append(bytes).and_then(|()| f.sync()).is_err() {
        panic!("MemFs refused to write {}", path.display());
    }
}

/// Reads a whole file of `fs` (which the target itself wrote).
pub fn get_file(fs: &MemFs, path: &Path) -> Vec<u8> {
    match fs.read_file(path) {
        Ok(b) => b,
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(dst) = buf.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

/// Recomputes the checksums of a WAL segment or manifest (the log format of
/// `strata_kv::wal`): the file header's, then each record's header and payload checksums,
/// walking records by their length fields. A record whose payload runs past the end gets
/// only a valid header checksum (a torn write, as a crash leaves it).
pub fn reseal_log(b: &mut [u8]) {
    if b.len() >= 16 {
        let crc = mask(crc32c(&b[..12]));
        put_u32(b, 12, crc);
    }
    let mut pos = 16usize;
    while pos + 13 <= b.len() {
        let len = get_fixed32(&b[pos + 4..]).unwrap_or(0) as usize;
        let start = pos + 13;
        let complete = len <= b.len() - start;
        if complete {
            let payload_crc = mask(crc32c_extend(
                crc32c(&b[pos + 4..pos + 9]),
                &b[start..start + len],
            ));
            put_u32(b, pos, payload_crc);
        }
        let header_crc = mask(crc32c(&b[pos..pos + 9]));
        put_u32(b, pos + 9, header_crc);
        if !complete {
            break;
        }
        pos = start + len;
    }
}

fn reseal_block(b: &mut [u8], h: BlockHandle) {
    let (Ok(off), Ok(size)) = (usize::try_from(h.offset), usize::try_from(h.size)) else {
        return;
    };
    let Some(end) = off.checked_add(size) else {
        return;
    };
    if end.checked_add(5).is_none_or(|e| e > b.len()) {
        return;
    }
    let crc = mask(crc32c_extend(crc32c(&b[off..end]), &b[end..end + 1]));
    put_u32(b, end + 1, crc);
}

fn footer_handles(b: &[u8]) -> Vec<BlockHandle> {
    let Some(f) = b.len().checked_sub(FOOTER_LEN).map(|at| &b[at..]) else {
        return Vec::new();
    };
    (0..3)
        .map(|i| BlockHandle {
            offset: get_fixed64(&f[16 * i..]).unwrap_or(0),
            size: get_fixed64(&f[16 * i + 8..]).unwrap_or(0),
        })
        .collect()
}

/// Recomputes the checksums of an SSTable: the footer's, those of the blocks the footer
/// points to, and those of the data blocks the index points to (as far as the index can
/// be read).
pub fn reseal_table(b: &mut [u8]) {
    let Some(footer_at) = b.len().checked_sub(FOOTER_LEN) else {
        return;
    };
    let crc = mask(crc32c(&b[footer_at..footer_at + 52]));
    put_u32(b, footer_at + 52, crc);
    let handles = footer_handles(b);
    for &h in &handles {
        reseal_block(b, h);
    }
    // handles[1] is the index block: reseal every data block it names.
    let fs = MemFs::new();
    let path = Path::new("reseal.sst");
    put_file(&fs, path, b);
    let Ok(file) = fs.open(path) else { return };
    if let Ok(raw) = read_block(file.as_ref(), "reseal.sst", handles[1]) {
        if let Ok(block) = Block::new(raw, "reseal.sst", handles[1].offset) {
            let mut it = BlockIter::new(Arc::new(block));
            let mut ok = it.seek_to_first().is_ok();
            let mut n = 0;
            while ok && it.valid() && n < 10_000 {
                if let Some(h) = BlockHandle::decode(it.value()) {
                    reseal_block(b, h);
                }
                ok = it.next().is_ok();
                n += 1;
            }
        }
    }
    // Data blocks may overlap the others in a mutated file: the footer's blocks last.
    for &h in &handles {
        reseal_block(b, h);
    }
}

/// Size of a Bitcask record (and batch) header.
const BC_HEADER: usize = 21;

/// Recomputes the checksums of a Bitcask data file from `start` (the file header's, if
/// `start` leaves room for one, then every record's and batch header's, walking by their
/// length fields).
pub fn reseal_bitcask_data(b: &mut [u8]) {
    if b.len() >= 24 {
        let crc = mask(crc32c(&b[..20]));
        put_u32(b, 20, crc);
    }
    let mut pos = 24usize;
    let mut budget = 100_000;
    while pos + BC_HEADER <= b.len() && budget > 0 {
        budget -= 1;
        let flags = b[pos + 12];
        let key_len = get_fixed32(&b[pos + 13..]).unwrap_or(0) as usize;
        let value_len = get_fixed32(&b[pos + 17..]).unwrap_or(0) as usize;
        if flags & 2 != 0 {
            // A batch header: checksum of its own 21 bytes; its records follow as usual.
            let crc = mask(crc32c(&b[pos + 4..pos + BC_HEADER]));
            put_u32(b, pos, crc);
            pos += BC_HEADER;
            continue;
        }
        let Some(end) = (pos + BC_HEADER)
            .checked_add(key_len)
            .and_then(|e| e.checked_add(value_len))
            .filter(|&e| e <= b.len())
        else {
            break;
        };
        let crc = mask(crc32c(&b[pos + 4..end]));
        put_u32(b, pos, crc);
        pos = end;
    }
}

/// Recomputes the checksums of a Bitcask hint file: the file header's and every entry's.
pub fn reseal_hints(b: &mut [u8]) {
    if b.len() >= 24 {
        let crc = mask(crc32c(&b[..20]));
        put_u32(b, 20, crc);
    }
    let mut pos = 24usize;
    while pos + 29 <= b.len() {
        let key_len = get_fixed32(&b[pos + 13..]).unwrap_or(0) as usize;
        let Some(end) = (pos + 29).checked_add(key_len).filter(|&e| e <= b.len()) else {
            break;
        };
        let crc = mask(crc32c(&b[pos + 4..end]));
        put_u32(b, pos, crc);
        pos = end;
    }
}

/// A small deterministic generator for the seed files.
#[derive(Debug, Clone)]
pub struct SeedRng(u64);

impl SeedRng {
    /// Starts from `seed`.
    pub fn new(seed: u64) -> Self {
        SeedRng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits (xorshift64*).
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Genuine files the targets splice fuzz input into (built once per process).
pub mod fixtures {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, OnceLock};

    use strata_kv::bitcask::format::{data_path, parse_file_name, BitcaskFile};
    use strata_kv::bitcask::{Bitcask, BitcaskOptions};
    use strata_kv::fs::{FileSystem, MemFs};
    use strata_kv::key::{internal_key, ValueKind};
    use strata_kv::sstable::format::{Footer, FOOTER_LEN};
    use strata_kv::sstable::{BlockHandle, TableBuilder};
    use strata_kv::{CompressionType, TableOptions};

    /// A valid table cut before its index block.
    #[derive(Debug)]
    pub struct IndexBase {
        /// File bytes before the index block (data blocks, filter).
        pub prefix: Vec<u8>,
        /// The genuine index block (without trailer).
        pub index: Vec<u8>,
        /// The properties block with its trailer.
        pub props: Vec<u8>,
        /// The filter block's handle.
        pub filter: BlockHandle,
        /// Every entry of the table: internal key -> value.
        pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
    }

    /// The table behind `sstable_index`: 200 entries in small uncompressed blocks.
    pub fn index_base() -> &'static IndexBase {
        static BASE: OnceLock<IndexBase> = OnceLock::new();
        BASE.get_or_init(|| {
            let fs = MemFs::new();
            let path = Path::new("base.sst");
            let opts = TableOptions {
                block_size: 256,
                block_restart_interval: 4,
                compression: CompressionType::None,
                bloom_bits_per_key: 10,
                ..TableOptions::default()
            };
            let mut b = TableBuilder::new(fs.create(path).expect("create"), "base.sst", &opts);
            let mut entries = BTreeMap::new();
            for i in 0..200u64 {
                let k = internal_key(format!("key{i:05}").as_bytes(), 1000 - i, ValueKind::Value);
                let v = format!("value-{i}").into_bytes();
                b.add(&k, &v).expect("add");
                entries.insert(k, v);
            }
            b.finish().expect("finish");
            let bytes = fs.read_file(path).expect("read");
            let footer_at = bytes.len() - FOOTER_LEN;
            let footer = Footer::decode(&bytes[footer_at..], "base.sst", bytes.len() as u64)
                .expect("footer");
            let (i, p) = (footer.index, footer.properties);
            IndexBase {
                prefix: bytes[..i.offset as usize].to_vec(),
                index: bytes[i.offset as usize..(i.offset + i.size) as usize].to_vec(),
                props: bytes[p.offset as usize..(p.offset + p.size) as usize + 5].to_vec(),
                filter: footer.filter,
                entries,
            }
        })
    }

    /// A merged Bitcask store with one hint file.
    #[derive(Debug)]
    pub struct HintBase {
        /// The store's files except hint files and the lock.
        pub files: Vec<(PathBuf, Vec<u8>)>,
        /// Path of the hint file the fuzz input replaces.
        pub hint: PathBuf,
        /// The genuine contents of that hint file.
        pub hint_bytes: Vec<u8>,
        /// Id of its data file.
        pub id: u32,
        /// Length of that data file.
        pub data_len: u64,
        /// What the store holds.
        pub model: BTreeMap<Vec<u8>, Vec<u8>>,
    }

    /// The store behind `bitcask_hint`: 40 keys, some deleted, merged so that every key
    /// has exactly one record.
    pub fn hint_base() -> &'static HintBase {
        static BASE: OnceLock<HintBase> = OnceLock::new();
        BASE.get_or_init(|| {
            let fs = Arc::new(MemFs::new());
            let dir = Path::new("/bc");
            let opts = BitcaskOptions {
                fs: fs.clone(),
                ..BitcaskOptions::default()
            };
            let db = Bitcask::open(dir, opts).expect("open");
            let mut model = BTreeMap::new();
            for i in 0..40u32 {
                let k = format!("key{i:03}");
                let v = format!("value-{i}-{}", "x".repeat(i as usize));
                db.put(&k, &v).expect("put");
                model.insert(k.into_bytes(), v.into_bytes());
            }
            for i in (0..40u32).step_by(7) {
                let k = format!("key{i:03}");
                db.delete(&k).expect("delete");
                model.remove(k.as_bytes());
            }
            db.merge().expect("merge");
            db.close().expect("close");
            let mut files = Vec::new();
            let mut hint = None;
            let mut names = fs.list_dir(dir).expect("list");
            names.sort();
            for name in names {
                let path = dir.join(&name);
                match parse_file_name(&name) {
                    Some(BitcaskFile::Hint(id)) if hint.is_none() => hint = Some((path, id)),
                    Some(BitcaskFile::Hint(_)) | Some(BitcaskFile::Lock) => {}
                    _ => files.push((path.clone(), fs.read_file(&path).expect("read"))),
                }
            }
            let (hint, id) = hint.expect("the merge wrote a hint file");
            let hint_bytes = fs.read_file(&hint).expect("read hint");
            let data_len = fs.file_len(&data_path(dir, id)).expect("data file");
            HintBase {
                files,
                hint,
                hint_bytes,
                id,
                data_len,
                model,
            }
        })
    }
}
