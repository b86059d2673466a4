//! Every decoder of bytes read from disk, fed random bytes and random mutations of valid
//! encodings: none panics, and each either reports an error or decodes to something that
//! re-encodes consistently. The short, fixed-seed companion of the cargo-fuzz targets in
//! `fuzz/` (see docs/RELIABILITY.md); mutations are resealed (checksums recomputed) half
//! of the time so that they reach the parsers behind the checksums.

use std::path::Path;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use strata_kv::bitcask::format::{
    check_hint_file, data_path, decode_merge_commit, decode_record, encode_file_header,
    encode_hint, encode_merge_commit, encode_record, DATA_MAGIC, FLAG_END, FLAG_TOMBSTONE,
    HINT_MAGIC, KIND_WRITER,
};
use strata_kv::bitcask::{Bitcask, BitcaskOptions, CorruptionPolicy};
use strata_kv::checksum::{crc32c, crc32c_extend, mask};
use strata_kv::coding::get_fixed32;
use strata_kv::filename::{current_path, manifest_path};
use strata_kv::fs::{FileSystem, MemFs};
use strata_kv::iterator::InternalIterator;
use strata_kv::key::{internal_key, parse_internal_key, ValueKind};
use strata_kv::manifest::{recover, FileMeta, ManifestState, VersionEdit};
use strata_kv::sstable::block::{Block, BlockBuilder, BlockIter};
use strata_kv::sstable::filter::BloomFilter;
use strata_kv::sstable::format::{Footer, FOOTER_LEN};
use strata_kv::sstable::{Properties, Table, TableBuilder};
use strata_kv::wal::{LogReader, LogWriter, TailPolicy, MANIFEST_MAGIC, WAL_MAGIC};
use strata_kv::{CompressionType, TableOptions, WriteBatch};

/// Runs `test` on `cases` values of `strategy` from this file's fixed seed.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    strata_testkit::check(0x5a, cases, strategy, test)
}

/// Random byte flips, and sometimes a truncation, applied to `base`.
fn mutations() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>, bool)> {
    (
        vec((any::<usize>(), any::<u8>()), 1..6),
        proptest::option::weighted(0.2, any::<usize>()),
        any::<bool>(),
    )
}

fn mutate(base: &[u8], (flips, cut, _): &(Vec<(usize, u8)>, Option<usize>, bool)) -> Vec<u8> {
    strata_testkit::mutate(base, flips, *cut)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the checksums of a log file (WAL or manifest), walking records by their
/// length fields; see `fuzz/src/lib.rs`.
fn reseal_log(b: &mut [u8]) {
    if b.len() >= 16 {
        let crc = mask(crc32c(&b[..12]));
        put_u32(b, 12, crc);
    }
    let mut pos = 16;
    while pos + 13 <= b.len() {
        let len = get_fixed32(&b[pos + 4..]).unwrap_or(0) as usize;
        let start = pos + 13;
        let complete = len <= b.len() - start;
        if complete {
            let crc = mask(crc32c_extend(
                crc32c(&b[pos + 4..pos + 9]),
                &b[start..start + len],
            ));
            put_u32(b, pos, crc);
        }
        let crc = mask(crc32c(&b[pos..pos + 9]));
        put_u32(b, pos + 9, crc);
        if !complete {
            break;
        }
        pos = start + len;
    }
}

fn log_file(magic: u64, payloads: &[Vec<u8>]) -> Vec<u8> {
    let fs = MemFs::new();
    let path = Path::new("x.log");
    let mut w = LogWriter::new(fs.create(path).unwrap(), "x.log", magic).unwrap();
    for p in payloads {
        w.add_record(p).unwrap();
    }
    drop(w);
    fs.read_file(path).unwrap()
}

fn valid_wal() -> Vec<u8> {
    let mut a = WriteBatch::new();
    a.put(b"apple", b"red").delete(b"pear");
    let mut b = WriteBatch::new();
    b.delete_range(b"a", b"c").put(b"k", vec![1u8; 30]);
    log_file(
        WAL_MAGIC,
        &[a.encoded().to_vec(), b.encoded().to_vec(), Vec::new()],
    )
}

fn read_log(data: &[u8], magic: u64, policy: TailPolicy) -> Result<Vec<Vec<u8>>, ()> {
    let mut r =
        LogReader::from_bytes_with_policy(data.to_vec(), "x.log", magic, policy).map_err(|_| ())?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().map_err(|_| ())? {
        out.push(rec);
    }
    assert!(r.end_of_records() <= data.len() as u64);
    Ok(out)
}

fn check_wal(data: &[u8]) {
    let strict = read_log(data, WAL_MAGIC, TailPolicy::Strict);
    let torn = read_log(data, WAL_MAGIC, TailPolicy::TolerateTornOnly);
    let any = read_log(data, WAL_MAGIC, TailPolicy::TolerateTornOrCorrupt);
    if strict.is_ok() {
        assert_eq!(strict, torn);
    }
    if torn.is_ok() {
        assert_eq!(torn, any);
    }
    for rec in any.unwrap_or_default() {
        if let Ok(batch) = WriteBatch::decode(&rec, "x.log", 0) {
            assert_eq!(batch.encoded(), &rec[..]);
            assert_eq!(batch.iter().count(), batch.len());
        }
    }
}

#[test]
fn wal_reader_and_write_batches() {
    check(1024, vec(any::<u8>(), 0..200), |data| {
        check_wal(&data);
        let mut with_header = valid_wal()[..16].to_vec();
        with_header.extend_from_slice(&data);
        check_wal(&with_header);
        reseal_log(&mut with_header);
        check_wal(&with_header);
    });
    let base = valid_wal();
    check(4096, mutations(), |m| {
        let mut data = mutate(&base, &m);
        if m.2 {
            reseal_log(&mut data);
        }
        check_wal(&data);
    });
}

fn scan(
    it: &mut dyn InternalIterator,
    forward: bool,
) -> strata_kv::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if forward {
        it.seek_to_first()?;
    } else {
        it.seek_to_last()?;
    }
    while it.valid() && out.len() < 10_000 {
        out.push((it.key().to_vec(), it.value().to_vec()));
        if forward {
            it.next()?;
        } else {
            it.prev()?;
        }
    }
    if !forward {
        out.reverse();
    }
    Ok(out)
}

fn check_block(data: &[u8]) {
    let Ok(block) = Block::new(data.to_vec(), "x.sst", 0) else {
        return;
    };
    let block = Arc::new(block);
    let fwd = scan(&mut BlockIter::new(block.clone()), true);
    let bwd = scan(&mut BlockIter::new(block.clone()), false);
    if let (Ok(f), Ok(b)) = (&fwd, &bwd) {
        assert_eq!(f, b, "forward and backward scans of a block disagree");
    }
    let mut it = BlockIter::new(block);
    let _ = it.seek(data);
}

#[test]
fn sstable_blocks() {
    check(2048, vec(any::<u8>(), 0..300), |data| check_block(&data));
    let mut b = BlockBuilder::new(3);
    for i in 0..20u64 {
        b.add(
            &internal_key(format!("key{i:03}").as_bytes(), 50 - i, ValueKind::Value),
            format!("v{i}").as_bytes(),
        );
    }
    let base = b.finish();
    check(4096, mutations(), |m| check_block(&mutate(&base, &m)));
}

fn table_bytes(compression: CompressionType) -> Vec<u8> {
    let fs = MemFs::new();
    let path = Path::new("t.sst");
    let opts = TableOptions {
        block_size: 128,
        compression,
        ..TableOptions::default()
    };
    let mut b = TableBuilder::new(fs.create(path).unwrap(), "t.sst", &opts);
    for i in 0..60u64 {
        let k = internal_key(format!("k{i:03}").as_bytes(), 100 - i, ValueKind::Value);
        b.add(&k, format!("value{i}").repeat(2).as_bytes()).unwrap();
    }
    b.finish().unwrap();
    fs.read_file(path).unwrap()
}

fn check_table(data: &[u8]) {
    let fs = MemFs::new();
    let path = Path::new("t.sst");
    let mut f = fs.create(path).unwrap();
    f.append(data).unwrap();
    f.sync().unwrap();
    let Ok(table) = Table::open(fs.open(path).unwrap(), "t.sst") else {
        return;
    };
    let table = Arc::new(table);
    let fwd = scan(&mut table.iter(), true);
    let bwd = scan(&mut table.iter(), false);
    if let (Ok(f), Ok(b)) = (&fwd, &bwd) {
        assert_eq!(f, b);
    }
    if let (Ok(n), Ok(f)) = (table.verify(), &fwd) {
        assert_eq!(n as usize, f.len());
        for (k, v) in f {
            let p = parse_internal_key(k).expect("verified key");
            let l = table
                .get(p.user_key, p.seq)
                .unwrap()
                .expect("verified entry");
            assert_eq!((&l.value, l.seq), (v, p.seq));
        }
    }
    if data.len() >= FOOTER_LEN {
        let at = data.len() - FOOTER_LEN;
        if let Ok(footer) = Footer::decode(&data[at..], "t.sst", data.len() as u64) {
            assert_eq!(footer.encode(), &data[at..]);
        }
    }
}

#[test]
fn sstable_tables_footers_filters_properties() {
    check(1024, vec(any::<u8>(), 0..200), |data| {
        check_table(&data);
        let _ = BloomFilter::new(data.clone()).map(|f| f.may_contain(b"k"));
        if let Ok(p) = Properties::decode(&data, "t.sst", 0) {
            assert_eq!(Properties::decode(&p.encode(), "t.sst", 0).unwrap(), p);
        }
    });
    for c in [
        CompressionType::None,
        CompressionType::Lz4,
        CompressionType::Zstd,
    ] {
        let base = table_bytes(c);
        check(1024, mutations(), |m| check_table(&mutate(&base, &m)));
    }
}

fn sample_edit() -> VersionEdit {
    VersionEdit {
        log_number: Some(3),
        next_file_number: Some(8),
        last_sequence: Some(90),
        new_files: vec![(
            2,
            FileMeta {
                number: 6,
                file_size: 1000,
                smallest: internal_key(b"a", 1, ValueKind::Value),
                largest: internal_key(b"m", 4, ValueKind::Deletion),
                smallest_seq: 1,
                largest_seq: 4,
                num_entries: 10,
                num_deletions: 2,
            },
        )],
        ..VersionEdit::default()
    }
}

fn check_manifest(data: &[u8]) {
    if let Ok(edit) = VersionEdit::decode(data, "MANIFEST-000001", 16) {
        assert_eq!(VersionEdit::decode(&edit.encode(), "m", 0).unwrap(), edit);
    }
    let fs = MemFs::new();
    let dir = Path::new("/db");
    fs.create_dir_all(dir).unwrap();
    for (path, bytes) in [
        (current_path(dir), &b"MANIFEST-000001\n"[..]),
        (manifest_path(dir, 1), data),
    ] {
        let mut f = fs.create(&path).unwrap();
        f.append(bytes).unwrap();
        f.sync().unwrap();
    }
    if let Ok((_, state)) = recover(&fs, dir) {
        let snap = VersionEdit::decode(&state.snapshot_edit().encode(), "m", 0).unwrap();
        let mut rebuilt = ManifestState::new();
        rebuilt.apply(&snap, "m", 0).unwrap();
        assert_eq!(rebuilt, state);
    }
}

#[test]
fn version_edits_and_manifest_replay() {
    check(1024, vec(any::<u8>(), 0..120), |data| check_manifest(&data));
    let mut second = VersionEdit {
        deleted_files: vec![(2, 6)],
        ..VersionEdit::default()
    };
    second.new_files = sample_edit().new_files;
    second.new_files[0].1.number = 7;
    let base = log_file(MANIFEST_MAGIC, &[sample_edit().encode(), second.encode()]);
    check(2048, mutations(), |m| {
        let mut data = mutate(&base, &m);
        if m.2 {
            reseal_log(&mut data);
        }
        check_manifest(&data);
        let edit = mutate(&sample_edit().encode(), &m);
        check_manifest(&edit);
    });
}

fn check_bitcask_bytes(data: &[u8]) {
    let _ = decode_record(data, false);
    if let Ok(r) = decode_record(data, true) {
        let mut again = Vec::new();
        encode_record(&mut again, r.seq, r.key, r.value);
        assert_eq!(again, data);
    }
    if let Ok(ids) = decode_merge_commit(data, 7) {
        assert_eq!(encode_merge_commit(7, &ids), data);
    }
    let _ = check_hint_file(data, 3, 1000);
}

/// Recomputes the checksums of a hint file's header and entries.
fn reseal_hints(b: &mut [u8]) {
    if b.len() >= 24 {
        let crc = mask(crc32c(&b[..20]));
        put_u32(b, 20, crc);
    }
    let mut pos = 24;
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

#[test]
fn bitcask_records_hints_and_merge_commits() {
    check(2048, vec(any::<u8>(), 0..100), |data| {
        check_bitcask_bytes(&data)
    });
    let mut rec = Vec::new();
    encode_record(&mut rec, 9, b"key", Some(b"value"));
    let mut hints = encode_file_header(HINT_MAGIC, 0, 3).to_vec();
    encode_hint(&mut hints, 5, 0, b"a", 30, 24);
    encode_hint(&mut hints, 6, FLAG_TOMBSTONE, b"b", 22, 54);
    encode_hint(&mut hints, 2, FLAG_END, b"", 0, 1000);
    let commit = encode_merge_commit(7, &[1, 2]);
    check(4096, mutations(), |m| {
        check_bitcask_bytes(&mutate(&rec, &m));
        check_bitcask_bytes(&mutate(&commit, &m));
        let mut h = mutate(&hints, &m);
        if m.2 {
            reseal_hints(&mut h);
        }
        check_bitcask_bytes(&h);
    });
}

fn bitcask_dir(files: &[(u32, Vec<u8>)]) -> Arc<MemFs> {
    let fs = Arc::new(MemFs::new());
    fs.create_dir_all(Path::new("/bc")).unwrap();
    for (id, bytes) in files {
        let mut f = fs.create(&data_path(Path::new("/bc"), *id)).unwrap();
        f.append(bytes).unwrap();
        f.sync().unwrap();
    }
    fs
}

fn open_bitcask(fs: &Arc<MemFs>, policy: CorruptionPolicy) -> strata_kv::Result<Bitcask> {
    Bitcask::open(
        "/bc",
        BitcaskOptions {
            create_if_missing: false,
            corruption: policy,
            fs: fs.clone(),
            ..BitcaskOptions::default()
        },
    )
}

/// Found by the `bitcask_hint` fuzzer: a record (or hint) with sequence number
/// 2^64 - 1 made recovery overflow computing the next one; a data file named with id
/// 2^32 - 1 did the same for the next file id. Both are refused as corruption.
#[test]
fn bitcask_with_exhausted_sequence_or_file_id_is_refused() {
    let mut file = encode_file_header(DATA_MAGIC, KIND_WRITER, 1).to_vec();
    encode_record(&mut file, u64::MAX, b"k", Some(b"v"));
    let fs = bitcask_dir(&[(1, file)]);
    let err = open_bitcask(&fs, CorruptionPolicy::Error)
        .err()
        .expect("refused");
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("000001.data"), "{err}");

    let mut file = encode_file_header(DATA_MAGIC, KIND_WRITER, u32::MAX).to_vec();
    encode_record(&mut file, 1, b"k", Some(b"v"));
    let fs = bitcask_dir(&[(u32::MAX, file)]);
    let err = open_bitcask(&fs, CorruptionPolicy::Error)
        .err()
        .expect("refused");
    assert!(err.is_corruption(), "{err}");
}

#[test]
fn bitcask_recovery_from_mutated_data_files() {
    let mut file = encode_file_header(DATA_MAGIC, KIND_WRITER, 1).to_vec();
    for i in 0..6u64 {
        encode_record(&mut file, i + 1, format!("k{i}").as_bytes(), Some(b"value"));
    }
    encode_record(&mut file, 7, b"k1", None);
    check(512, mutations(), |m| {
        let data = mutate(&file, &m);
        for policy in [CorruptionPolicy::Error, CorruptionPolicy::SkipAndReport] {
            let fs = bitcask_dir(&[(1, data.clone())]);
            let Ok(db) = open_bitcask(&fs, policy) else {
                continue;
            };
            for k in db.keys() {
                if let Ok(Some(v)) = db.get(&k) {
                    assert_eq!(v, b"value", "a value the store never held");
                }
            }
            db.abandon();
        }
    });
}
