//! Table-level tests: round trips against a model, corruption of every byte, fuzzing.

use super::format::FOOTER_LEN;
use super::*;
use crate::cache::BlockCache;
use crate::error::Error;
use crate::fs::{FileSystem, MemFs, PosixFs};
use crate::iterator::InternalIterator;
use crate::key::{compare_internal, internal_key, parse_internal_key, seek_key, ValueKind};
use crate::options::{CompressionType, TableOptions};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata_testkit::SplitMix as Rng;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// user key -> (seq, kind, value) of each version.
type Model = BTreeMap<Vec<u8>, Vec<(u64, ValueKind, Vec<u8>)>>;

/// Random entries: distinct user keys with 1-4 versions each (unique sequence numbers),
/// ~20% tombstones, sorted by internal key.
fn random_entries(rng: &mut Rng, n: usize) -> Entries {
    let mut user_keys: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    while total < n {
        let mut k = format!("user{:08}", rng.below(1 << 30)).into_bytes();
        let extra = rng.below(12) as usize;
        k.extend(rng.bytes(extra));
        total += 1 + rng.below(4) as usize;
        user_keys.push(k);
    }
    user_keys.sort();
    user_keys.dedup();
    let mut seqs: Vec<u64> = (1..=(4 * user_keys.len() as u64)).collect();
    // Fisher-Yates shuffle so versions of a key have scattered sequence numbers.
    for i in (1..seqs.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        seqs.swap(i, j);
    }
    let mut seqs = seqs.into_iter();
    let mut out = Vec::new();
    for uk in &user_keys {
        for _ in 0..=rng.below(4) {
            let Some(seq) = seqs.next() else { break };
            let kind = if rng.below(5) == 0 {
                ValueKind::Deletion
            } else {
                ValueKind::Value
            };
            let v = if kind == ValueKind::Deletion {
                Vec::new()
            } else {
                let len = rng.below(100) as usize;
                rng.bytes(len)
            };
            out.push((internal_key(uk, seq, kind), v));
        }
    }
    out.sort_by(|a, b| compare_internal(&a.0, &b.0));
    out
}

fn write_table(fs: &MemFs, path: &str, entries: &Entries, opts: &TableOptions) -> Properties {
    let file = fs.create(Path::new(path)).unwrap();
    let mut b = TableBuilder::new(file, path, opts);
    for (k, v) in entries {
        b.add(k, v).unwrap();
    }
    assert_eq!(b.num_entries(), entries.len() as u64);
    b.finish().unwrap()
}

fn open(fs: &MemFs, path: &str) -> crate::Result<Arc<Table>> {
    Table::open(fs.open(Path::new(path)).unwrap(), path).map(Arc::new)
}

fn open_cached(fs: &MemFs, path: &str, cache: &Arc<BlockCache>) -> crate::Result<Arc<Table>> {
    Table::open_with_cache(fs.open(Path::new(path)).unwrap(), path, Some(cache.clone()))
        .map(Arc::new)
}

/// The model's answer to `get(user_key, seq)`.
/// A lookup without its sequence number, to compare with the model.
fn kv(l: Option<crate::key::Lookup>) -> Option<(ValueKind, Vec<u8>)> {
    l.map(|l| (l.kind, l.value))
}

fn model_get(model: &Model, uk: &[u8], seq: u64) -> Option<(ValueKind, Vec<u8>)> {
    model
        .get(uk)?
        .iter()
        .filter(|(s, _, _)| *s <= seq)
        .max_by_key(|(s, _, _)| *s)
        .map(|(_, k, v)| (*k, v.clone()))
}

fn build_model(entries: &Entries) -> Model {
    let mut model = Model::new();
    for (k, v) in entries {
        let p = parse_internal_key(k).unwrap();
        model
            .entry(p.user_key.to_vec())
            .or_default()
            .push((p.seq, p.kind, v.clone()));
    }
    model
}

fn collect_forward(it: &mut dyn InternalIterator) -> crate::Result<Entries> {
    let mut out = Vec::new();
    it.seek_to_first()?;
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next()?;
    }
    Ok(out)
}

fn collect_backward(it: &mut dyn InternalIterator) -> crate::Result<Entries> {
    let mut out = Vec::new();
    it.seek_to_last()?;
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.prev()?;
    }
    out.reverse();
    Ok(out)
}

fn check_table(table: &Arc<Table>, entries: &Entries, rng: &mut Rng) {
    let model = build_model(entries);
    let max_seq = entries
        .iter()
        .map(|(k, _)| parse_internal_key(k).unwrap().seq)
        .max()
        .unwrap_or(0);
    // Point lookups at every interesting sequence number.
    for (uk, versions) in &model {
        let mut seqs = vec![0, max_seq + 10, crate::key::MAX_SEQUENCE];
        for (s, _, _) in versions {
            seqs.extend([*s, *s - 1, *s + 1]);
        }
        for s in seqs {
            assert_eq!(
                kv(table.get(uk, s).unwrap()),
                model_get(&model, uk, s),
                "get({uk:?}, {s})"
            );
        }
    }
    // Absent keys, around and outside the key range.
    for uk in [&b""[..], b"a", b"user", b"user5", b"zzzz"] {
        assert_eq!(
            kv(table.get(uk, max_seq).unwrap()),
            model_get(&model, uk, max_seq)
        );
    }
    let mut it = table.iter();
    assert_eq!(&collect_forward(&mut it).unwrap(), entries);
    assert_eq!(&collect_backward(&mut it).unwrap(), entries);
    // Random seeks, then a step each way.
    for _ in 0..500 {
        let target = if entries.is_empty() || rng.below(3) == 0 {
            seek_key(
                format!("user{:08}", rng.below(1 << 30)).as_bytes(),
                rng.below(max_seq + 2),
            )
        } else {
            let (k, _) = &entries[rng.below(entries.len() as u64) as usize];
            let uk = crate::key::user_key(k);
            seek_key(uk, rng.below(max_seq + 2))
        };
        let pos = entries.partition_point(|(k, _)| compare_internal(k, &target) == Ordering::Less);
        it.seek(&target).unwrap();
        if pos == entries.len() {
            assert!(!it.valid());
            continue;
        }
        assert!(it.valid());
        assert_eq!(
            (it.key(), it.value()),
            (&entries[pos].0[..], &entries[pos].1[..])
        );
        it.prev().unwrap();
        if pos == 0 {
            assert!(!it.valid());
            it.seek(&target).unwrap();
        } else {
            assert_eq!(it.key(), &entries[pos - 1].0[..]);
            it.next().unwrap();
            assert_eq!(it.key(), &entries[pos].0[..]);
        }
        it.next().unwrap();
        match entries.get(pos + 1) {
            Some((k, _)) => assert_eq!(it.key(), &k[..]),
            None => assert!(!it.valid()),
        }
    }
    assert_eq!(table.verify().unwrap(), entries.len() as u64);
}

#[test]
fn table_roundtrip_all_compressions() {
    let fs = MemFs::new();
    let mut rng = Rng(42);
    let entries = random_entries(&mut rng, 5000);
    for (i, compression) in [
        CompressionType::None,
        CompressionType::Lz4,
        CompressionType::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        for block_size in [4096, 300] {
            let opts = TableOptions {
                compression,
                block_size,
                ..TableOptions::default()
            };
            let path = format!("/db/{i}-{block_size}.sst");
            let props = write_table(&fs, &path, &entries, &opts);
            let table = open(&fs, &path).unwrap();
            assert_eq!(table.properties(), &props);
            assert_eq!(props.file_size, fs.file_len(Path::new(&path)).unwrap());
            assert_eq!(props.num_entries, entries.len() as u64);
            assert!(props.num_data_blocks > 1);
            assert_eq!(
                props.num_deletions,
                entries
                    .iter()
                    .filter(|(k, _)| parse_internal_key(k).unwrap().kind == ValueKind::Deletion)
                    .count() as u64
            );
            assert_eq!(table.file_name(), path);
            check_table(&table, &entries, &mut rng);
            let (checked, _) = table.filter_stats();
            assert!(
                checked > 3 * entries.len() as u64,
                "{checked} filter checks"
            );
        }
    }
}

#[test]
fn versions_straddling_block_boundaries() {
    // Tiny blocks: every entry in a block of its own, so each version of a key lies on a
    // block boundary.
    let fs = MemFs::new();
    let mut entries = Vec::new();
    for k in 0..30u32 {
        for seq in (1..=5u64).rev() {
            let kind = if seq == 3 {
                ValueKind::Deletion
            } else {
                ValueKind::Value
            };
            entries.push((
                internal_key(format!("k{k:03}").as_bytes(), seq * 100 + k as u64, kind),
                format!("v{k}-{seq}").into_bytes(),
            ));
        }
    }
    for (block_size, interval) in [(1, 1), (64, 2), (1 << 20, 16)] {
        let opts = TableOptions {
            block_size,
            block_restart_interval: interval,
            bloom_bits_per_key: 0,
            ..TableOptions::default()
        };
        let path = format!("/straddle-{block_size}.sst");
        let props = write_table(&fs, &path, &entries, &opts);
        assert_eq!(props.filter_bytes, 0);
        let table = open(&fs, &path).unwrap();
        check_table(&table, &entries, &mut Rng(7));
    }
}

#[test]
fn empty_table() {
    let fs = MemFs::new();
    let props = write_table(&fs, "/empty.sst", &Vec::new(), &TableOptions::default());
    assert_eq!(props.num_entries, 0);
    let table = open(&fs, "/empty.sst").unwrap();
    assert_eq!(table.get(b"a", 10).unwrap(), None);
    assert!(!table.may_contain(b"a"));
    let mut it = table.iter();
    assert!(collect_forward(&mut it).unwrap().is_empty());
    assert!(collect_backward(&mut it).unwrap().is_empty());
    it.seek(&seek_key(b"a", 1)).unwrap();
    assert!(!it.valid());
    assert_eq!(table.verify().unwrap(), 0);
}

#[test]
fn builder_rejects_misordered_and_bad_keys() {
    let fs = MemFs::new();
    let file = fs.create(Path::new("/o.sst")).unwrap();
    let mut b = TableBuilder::new(file, "/o.sst", &TableOptions::default());
    b.add(&internal_key(b"b", 5, ValueKind::Value), b"1")
        .unwrap();
    for bad in [
        internal_key(b"a", 9, ValueKind::Value),
        internal_key(b"b", 5, ValueKind::Value),
        internal_key(b"b", 6, ValueKind::Value),
        b"short".to_vec(),
    ] {
        assert!(matches!(b.add(&bad, b"x"), Err(Error::InvalidArgument(_))));
    }
    b.add(&internal_key(b"b", 4, ValueKind::Deletion), b"")
        .unwrap();
    assert!(b.estimated_file_size() > 0);
    let props = b.finish().unwrap();
    assert_eq!((props.num_entries, props.num_deletions), (2, 1));
    assert_eq!((props.smallest_seq, props.largest_seq), (4, 5));
}

#[test]
fn builder_reports_io_errors() {
    let fs = MemFs::new();
    let file = fs.create(Path::new("/full.sst")).unwrap();
    let opts = TableOptions {
        block_size: 64,
        ..TableOptions::default()
    };
    let mut b = TableBuilder::new(file, "/full.sst", &opts);
    fs.set_space_left(Some(100));
    let mut err = None;
    for i in 0..1000u32 {
        if let Err(e) = b.add(
            &internal_key(&i.to_be_bytes(), 1, ValueKind::Value),
            b"value",
        ) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("ENOSPC surfaces");
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/full.sst"));
    fs.set_no_space(false);
    assert!(b.finish().is_err());

    // A failing fsync fails finish.
    let file = fs.create(Path::new("/nosync.sst")).unwrap();
    let mut b = TableBuilder::new(file, "/nosync.sst", &opts);
    b.add(&internal_key(b"k", 1, ValueKind::Value), b"v")
        .unwrap();
    fs.set_fail_sync(true);
    assert!(matches!(b.finish(), Err(Error::Io { .. })));
}

#[test]
fn bloom_filter_used_by_get() {
    let fs = MemFs::new();
    let entries: Entries = (0..2000u32)
        .map(|i| {
            (
                internal_key(format!("key{i:05}").as_bytes(), 1, ValueKind::Value),
                b"v".to_vec(),
            )
        })
        .collect();
    write_table(&fs, "/bloom.sst", &entries, &TableOptions::default());
    let table = open(&fs, "/bloom.sst").unwrap();
    for i in 0..2000u32 {
        let uk = format!("key{i:05}");
        assert!(table.may_contain(uk.as_bytes()));
        assert!(table.get(uk.as_bytes(), 10).unwrap().is_some());
    }
    // In range but absent: "key00001x" sorts between existing keys.
    for i in 0..1000u32 {
        assert_eq!(
            table.get(format!("key{i:05}x").as_bytes(), 10).unwrap(),
            None
        );
    }
    let (checked, useful) = table.filter_stats();
    assert_eq!(checked, 3000);
    assert!(useful >= 970, "only {useful} of 1000 absent keys filtered");
}

#[test]
fn format_v1_tables_with_the_legacy_filter_still_read() {
    let fs = MemFs::new();
    let entries: Entries = (0..3000u32)
        .map(|i| {
            (
                internal_key(format!("key{i:05}").as_bytes(), 1, ValueKind::Value),
                format!("v{i}").into_bytes(),
            )
        })
        .collect();
    for v1 in [true, false] {
        let path = if v1 { "/v1.sst" } else { "/v2.sst" };
        let file = fs.create(Path::new(path)).unwrap();
        let mut b = TableBuilder::new(file, path, &TableOptions::default());
        if v1 {
            b.write_format_v1();
        }
        for (k, v) in &entries {
            b.add(k, v).unwrap();
        }
        b.finish().unwrap();
        let bytes = fs.read_file(Path::new(path)).unwrap();
        let f = bytes.len() - FOOTER_LEN;
        let version = u32::from_le_bytes(bytes[f + 48..f + 52].try_into().unwrap());
        assert_eq!(version, if v1 { 1 } else { FORMAT_VERSION });
        let table = open(&fs, path).unwrap();
        assert_eq!(table.verify().unwrap(), 3000);
        for i in 0..3000u32 {
            let got = table.get(format!("key{i:05}").as_bytes(), 10).unwrap();
            assert_eq!(got.unwrap().value, format!("v{i}").into_bytes());
        }
        for i in 0..1000u32 {
            assert_eq!(
                table.get(format!("key{i:05}x").as_bytes(), 10).unwrap(),
                None
            );
        }
        let (checked, useful) = table.filter_stats();
        assert_eq!(checked, 4000);
        assert!(
            useful >= 970,
            "{path}: only {useful} of 1000 absent keys filtered"
        );
    }
}

#[test]
fn posix_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("000001.sst");
    let name = path.to_string_lossy().into_owned();
    let entries = random_entries(&mut Rng(3), 500);
    let mut b = TableBuilder::new(
        PosixFs.create(&path).unwrap(),
        name.clone(),
        &TableOptions::default(),
    );
    for (k, v) in &entries {
        b.add(k, v).unwrap();
    }
    let props = b.finish().unwrap();
    assert_eq!(props.file_size, std::fs::metadata(&path).unwrap().len());
    let table = Arc::new(Table::open(PosixFs.open(&path).unwrap(), name).unwrap());
    check_table(&table, &entries, &mut Rng(4));
}

/// Opens the table in `bytes` (through `cache` if given) and reads everything; returns
/// what it read or the first error.
fn read_everything(
    fs: &MemFs,
    path: &str,
    bytes: &[u8],
    entries: &Entries,
    cache: Option<&Arc<BlockCache>>,
) -> crate::Result<()> {
    let mut w = fs.create(Path::new(path)).unwrap();
    w.append(bytes).unwrap();
    let table = match cache {
        Some(c) => open_cached(fs, path, c)?,
        None => open(fs, path)?,
    };
    let mut it = table.iter();
    let fwd = collect_forward(&mut it)?;
    assert_eq!(&fwd, entries, "forward iteration returned wrong data");
    let back = collect_backward(&mut it)?;
    assert_eq!(&back, entries, "backward iteration returned wrong data");
    for (k, v) in entries {
        let p = parse_internal_key(k).unwrap();
        let got = kv(table.get(p.user_key, p.seq)?);
        assert_eq!(got, Some((p.kind, v.clone())), "get returned wrong data");
    }
    assert_eq!(table.verify()?, entries.len() as u64);
    Ok(())
}

#[test]
fn corruption_of_every_byte_is_detected() {
    for compression in [CompressionType::None, CompressionType::Lz4] {
        let fs = MemFs::new();
        let entries = random_entries(&mut Rng(11), 60);
        let opts = TableOptions {
            block_size: 512,
            block_restart_interval: 4,
            compression,
            ..TableOptions::default()
        };
        let props = write_table(&fs, "/orig.sst", &entries, &opts);
        assert!(props.num_data_blocks >= 3, "{props:?}");
        let original = fs.read_file(Path::new("/orig.sst")).unwrap();
        assert!(original.len() < 8192, "table of {} bytes", original.len());
        read_everything(&fs, "/copy.sst", &original, &entries, None).unwrap();
        // One block cache shared by every corrupt copy, all written to the same path: a
        // copy must never be served another copy's blocks, nor a corrupt block.
        let cache = Arc::new(BlockCache::new(1 << 20));
        let path = "/db/000042.sst";
        let mut detected = 0;
        for offset in 0..original.len() {
            for flip in [0x40u8, 0x01] {
                let mut bytes = original.clone();
                bytes[offset] ^= flip;
                // Odd offsets read through the cache, even ones without.
                let c = (offset % 2 == 1).then_some(&cache);
                match read_everything(&fs, path, &bytes, &entries, c) {
                    Ok(()) => {}
                    Err(e) => {
                        assert!(
                            e.is_corruption() || matches!(e, Error::UnsupportedVersion { .. }),
                            "offset {offset}: unexpected error kind {e:?}"
                        );
                        assert!(e.to_string().contains(path), "offset {offset}: {e}");
                        detected += 1;
                    }
                }
            }
        }
        // Every byte is covered by a checksum, so every flip is caught.
        assert_eq!(detected, 2 * original.len());
        // Corrupt copies fail on their first read of the bad block, so there were only
        // misses; the good blocks before it were cached.
        assert!(cache.stats().inserts > 0, "{:?}", cache.stats());
        // The intact table still reads correctly through the well-used cache.
        read_everything(&fs, path, &original, &entries, Some(&cache)).unwrap();
        assert!(cache.stats().hits > 0, "{:?}", cache.stats());
        // Truncation too.
        for len in [
            0,
            1,
            FOOTER_LEN - 1,
            FOOTER_LEN,
            original.len() / 2,
            original.len() - 1,
        ] {
            let e =
                read_everything(&fs, path, &original[..len], &entries, Some(&cache)).unwrap_err();
            assert!(e.is_corruption() && e.to_string().contains(path), "{e}");
        }
    }
}

#[test]
fn read_errors_are_io_errors() {
    let fs = MemFs::new();
    let entries = random_entries(&mut Rng(5), 200);
    write_table(&fs, "/eio.sst", &entries, &TableOptions::default());
    fs.add_read_error("eio");
    let e = open(&fs, "/eio.sst").unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/eio.sst"));
    // A byte flipped on read (not on disk) is corruption.
    fs.clear_read_faults();
    let table = open(&fs, "/eio.sst").unwrap();
    fs.flip_on_read(Path::new("/eio.sst"), 10);
    let e = collect_forward(&mut table.iter()).unwrap_err();
    assert!(e.is_corruption(), "{e}");
}

#[test]
fn table_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_send<T: Send + 'static>() {}
    assert_send_sync::<Table>();
    assert_send::<TableIterator>();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_files_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..400),
                                with_footer in any::<bool>()) {
        if with_footer && data.len() >= FOOTER_LEN {
            // Give the random bytes a valid-looking magic so that later checks run.
            let n = data.len();
            data[n - 8..].copy_from_slice(&TABLE_MAGIC.to_le_bytes());
            data[n - 16..n - 12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        }
        let fs = MemFs::new();
        let mut w = fs.create(Path::new("/fuzz.sst")).unwrap();
        w.append(&data).unwrap();
        if let Ok(t) = open(&fs, "/fuzz.sst") {
            let _ = collect_forward(&mut t.iter());
            let _ = t.verify();
        }
    }
}

#[test]
fn future_version_is_unsupported() {
    let fs = MemFs::new();
    let entries = random_entries(&mut Rng(9), 50);
    write_table(&fs, "/v.sst", &entries, &TableOptions::default());
    let mut bytes = fs.read_file(Path::new("/v.sst")).unwrap();
    let f = bytes.len() - FOOTER_LEN;
    bytes[f + 48..f + 52].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let crc = crate::checksum::mask(crate::checksum::crc32c(&bytes[f..f + 52]));
    bytes[f + 52..f + 56].copy_from_slice(&crc.to_le_bytes());
    let mut w = fs.create(Path::new("/v2.sst")).unwrap();
    w.append(&bytes).unwrap();
    let e = open(&fs, "/v2.sst").unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedVersion { version, .. } if version == FORMAT_VERSION + 1),
        "{e:?}"
    );
    assert!(e.to_string().contains("/v2.sst"));
}

/// Entries `key{i:05}` -> 100-byte values, in many small blocks.
fn block_cache_table(fs: &MemFs, path: &str, tag: u8) -> Entries {
    table_of_small_blocks(fs, path, tag, TableOptions::default().compression)
}

/// As [`block_cache_table`], with `compression`.
fn table_of_small_blocks(fs: &MemFs, path: &str, tag: u8, compression: CompressionType) -> Entries {
    let entries: Entries = (0..400u32)
        .map(|i| {
            (
                internal_key(format!("key{i:05}").as_bytes(), 1, ValueKind::Value),
                vec![tag; 100],
            )
        })
        .collect();
    let opts = TableOptions {
        block_size: 1024,
        compression,
        ..TableOptions::default()
    };
    let props = write_table(fs, path, &entries, &opts);
    assert!(props.num_data_blocks > 20, "{props:?}");
    entries
}

#[test]
fn block_cache_hits_read_no_file() {
    let fs = MemFs::new();
    let entries = block_cache_table(&fs, "/c.sst", 1);
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = open_cached(&fs, "/c.sst", &cache).unwrap();
    let after_open = table.bytes_read();
    assert!(after_open > FOOTER_LEN as u64);

    assert!(table.get(b"key00123", 5).unwrap().is_some());
    let after_miss = table.bytes_read();
    assert!(after_miss > after_open);
    let s1 = cache.stats();
    assert_eq!((s1.hits, s1.misses, s1.inserts), (0, 1, 1));

    assert!(table.get(b"key00123", 5).unwrap().is_some());
    assert_eq!(table.bytes_read(), after_miss, "a cache hit read the file");
    let s2 = cache.stats();
    assert_eq!((s2.hits, s2.misses, s2.inserts), (1, 1, 1));
    assert!(s2.usage_bytes > 0);

    // A first scan (through readahead windows) caches only the blocks it did not take
    // from a window (the first, read alone before the scan was detected, and the point
    // read's); a second scan reads every block again and fills the cache; a third reads
    // nothing from the file.
    let mut it = table.iter();
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    let after_first = table.bytes_read();
    assert_eq!(after_first - after_open, table.properties().data_bytes);
    let inserts = cache.stats().inserts;
    assert!(inserts <= 2, "a one-off scan filled the cache: {inserts}");
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    let after_scan = table.bytes_read();
    assert!(cache.stats().inserts > inserts + 20, "{:?}", cache.stats());
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    assert_eq!(collect_backward(&mut it).unwrap(), entries);
    assert_eq!(table.bytes_read(), after_scan);
    // The second scan read from the file only the blocks the first had not cached.
    assert!(after_scan - after_first < table.properties().data_bytes);
    assert!(after_scan - after_first > table.properties().data_bytes / 2);

    // verify() re-reads the file, bypassing the cache and not filling it.
    let s3 = cache.stats();
    assert_eq!(table.verify().unwrap(), entries.len() as u64);
    assert_eq!(
        table.bytes_read(),
        after_scan + table.properties().data_bytes
    );
    let s4 = cache.stats();
    assert_eq!(
        (s4.hits, s4.misses, s4.inserts),
        (s3.hits, s3.misses, s3.inserts)
    );

    // Without a cache every read goes to the file.
    let plain = open(&fs, "/c.sst").unwrap();
    assert_eq!(plain.cache_id(), None);
    let base = plain.bytes_read();
    assert_eq!(base, after_open);
    plain.get(b"key00123", 5).unwrap();
    plain.get(b"key00123", 5).unwrap();
    assert_eq!(plain.bytes_read() - base, 2 * (after_miss - after_open));
}

#[test]
fn block_cache_does_not_alias_tables() {
    // Two tables with identical layouts (same offsets) but different values.
    let fs = MemFs::new();
    let a = block_cache_table(&fs, "/a.sst", b'a');
    let b = block_cache_table(&fs, "/b.sst", b'b');
    let cache = Arc::new(BlockCache::new(1 << 20));
    let ta = open_cached(&fs, "/a.sst", &cache).unwrap();
    let tb = open_cached(&fs, "/b.sst", &cache).unwrap();
    assert_ne!(ta.cache_id(), tb.cache_id());
    for _ in 0..2 {
        assert_eq!(collect_forward(&mut ta.iter()).unwrap(), a);
        assert_eq!(collect_forward(&mut tb.iter()).unwrap(), b);
    }
    // Rewriting a file under the same name and reopening it gets a fresh id too.
    let c = block_cache_table(&fs, "/a.sst", b'c');
    let tc = open_cached(&fs, "/a.sst", &cache).unwrap();
    assert_eq!(collect_forward(&mut tc.iter()).unwrap(), c);
    assert_eq!(
        kv(tc.get(b"key00007", 5).unwrap()),
        Some((ValueKind::Value, vec![b'c'; 100]))
    );
    let s = cache.stats();
    assert!(s.hits > 0, "{s:?}");
}

#[test]
fn block_cache_never_holds_a_corrupt_block() {
    let fs = MemFs::new();
    let entries = block_cache_table(&fs, "/f.sst", 7);
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = open_cached(&fs, "/f.sst", &cache).unwrap();
    // Byte 10 lies in the first data block.
    fs.flip_on_read(Path::new("/f.sst"), 10);
    let (k0, _) = &entries[0];
    let uk = crate::key::user_key(k0);
    for _ in 0..3 {
        assert!(table.get(uk, 5).unwrap_err().is_corruption());
        assert!(collect_forward(&mut table.iter())
            .unwrap_err()
            .is_corruption());
    }
    let s = cache.stats();
    assert_eq!((s.hits, s.inserts, s.usage_bytes), (0, 0, 0), "{s:?}");
    // Once the fault is gone the block is read afresh, verified and cached.
    fs.clear_read_faults();
    assert_eq!(
        kv(table.get(uk, 5).unwrap()),
        Some((ValueKind::Value, vec![7; 100]))
    );
    assert_eq!(cache.stats().inserts, 1);
    // And from then on served from the cache even if the file goes bad.
    fs.flip_on_read(Path::new("/f.sst"), 10);
    assert!(table.get(uk, 5).unwrap().is_some());
}

#[test]
fn block_cache_disabled_with_zero_capacity() {
    let fs = MemFs::new();
    let entries = block_cache_table(&fs, "/z.sst", 2);
    let cache = Arc::new(BlockCache::new(0));
    let table = open_cached(&fs, "/z.sst", &cache).unwrap();
    let mut it = table.iter();
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    let first = table.bytes_read();
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    assert_eq!(
        table.bytes_read() - first,
        table.properties().data_bytes,
        "nothing was cached"
    );
    let s = cache.stats();
    assert_eq!((s.hits, s.inserts, s.usage_bytes), (0, 0, 0));
    assert!(s.misses > 0);
}

#[test]
fn fill_cache_false_does_not_insert() {
    let fs = MemFs::new();
    let entries = block_cache_table(&fs, "/nf.sst", 3);
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = open_cached(&fs, "/nf.sst", &cache).unwrap();
    let mut it = table.iter();
    it.set_fill_cache(false);
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    assert_eq!(cache.stats().inserts, 0);
    assert_eq!(cache.usage_bytes(), 0);
    // Blocks cached by others are still used.
    assert!(table.get(b"key00000", 5).unwrap().is_some());
    assert_eq!(cache.stats().inserts, 1);
    let before = cache.stats().hits;
    it.seek_to_first().unwrap();
    assert!(cache.stats().hits > before);
}

#[test]
fn block_cache_is_bounded_under_table_reads() {
    let fs = MemFs::new();
    let mut tables = Vec::new();
    let capacity = 16 << 10;
    let cache = Arc::new(BlockCache::new(capacity));
    for i in 0..4u8 {
        let path = format!("/bound{i}.sst");
        let entries = block_cache_table(&fs, &path, i);
        tables.push((open_cached(&fs, &path, &cache).unwrap(), entries));
    }
    for _ in 0..3 {
        for (t, entries) in &tables {
            assert_eq!(&collect_forward(&mut t.iter()).unwrap(), entries);
            // Point reads fill the cache too.
            for (k, v) in entries.iter().step_by(7) {
                let uk = parse_internal_key(k).unwrap().user_key;
                assert_eq!(
                    kv(t.get(uk, 5).unwrap()),
                    Some((ValueKind::Value, v.clone()))
                );
            }
            // Blocks are ~1 KiB: usage stays within capacity plus one block.
            let used = cache.usage_bytes();
            assert!(
                used <= capacity + 2048 + crate::cache::BLOCK_OVERHEAD,
                "{used}"
            );
        }
    }
    assert!(cache.stats().inserts > 40);
}

#[test]
fn concurrent_cached_reads() {
    let fs = MemFs::new();
    let entries = block_cache_table(&fs, "/mt.sst", 9);
    // Small enough that blocks are evicted and re-read while threads race.
    let cache = Arc::new(BlockCache::new(8 << 10));
    let table = open_cached(&fs, "/mt.sst", &cache).unwrap();
    std::thread::scope(|s| {
        for t in 0..4usize {
            let (table, entries) = (&table, &entries);
            s.spawn(move || {
                for i in 0..2000usize {
                    let (k, v) = &entries[(i * 37 + t * 101) % entries.len()];
                    let p = parse_internal_key(k).unwrap();
                    assert_eq!(
                        table.get(p.user_key, 5).unwrap().map(|l| (l.kind, l.value)),
                        Some((ValueKind::Value, v.clone()))
                    );
                    if i % 500 == 0 {
                        assert_eq!(&collect_forward(&mut table.iter()).unwrap(), entries);
                    }
                }
            });
        }
    });
    let s = cache.stats();
    assert!(s.hits > 0 && s.misses > 0, "{s:?}");
}

#[test]
fn scans_read_ahead_and_still_verify_every_block() {
    // 400 entries in 1 KiB blocks: ~50 blocks, so scans grow windows of several blocks.
    let fs = MemFs::new();
    let entries = block_cache_table(&fs, "/r.sst", 3);
    let cache = Arc::new(BlockCache::new(0));
    let table = open_cached(&fs, "/r.sst", &cache).unwrap();
    let mut it = table.iter();
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    assert_eq!(collect_backward(&mut it).unwrap(), entries);
    // Zig-zag across window boundaries.
    it.seek_to_first().unwrap();
    for (k, _) in &entries[..entries.len() - 1] {
        it.next().unwrap();
        it.prev().unwrap();
        assert_eq!(it.key(), k.as_slice());
        it.next().unwrap();
    }

    // A block corrupted on disk is caught when a scan takes it from a window.
    let mid = table.properties().data_bytes / 2;
    fs.corrupt_byte(Path::new("/r.sst"), mid).unwrap();
    let table = open_cached(&fs, "/r.sst", &cache).unwrap();
    let mut it = table.iter();
    let err = collect_forward(&mut it).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    let err = collect_backward(&mut it).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
}

/// As [`block_cache_table`], stored uncompressed: a scan's blocks are slices of its
/// readahead windows, shared with the block cache.
fn uncompressed_table(fs: &MemFs, path: &str, tag: u8) -> Entries {
    table_of_small_blocks(fs, path, tag, CompressionType::None)
}

#[test]
fn scan_caches_window_slices_charged_by_stored_bytes() {
    let fs = MemFs::new();
    let entries = uncompressed_table(&fs, "/w.sst", 4);
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = open_cached(&fs, "/w.sst", &cache).unwrap();
    let after_open = table.bytes_read();
    // The first scan caches only its first block (read alone before the scan was
    // detected); the others come from windows and are cached on their second read.
    assert_eq!(collect_forward(&mut table.iter()).unwrap(), entries);
    let props = table.properties().clone();
    let first = cache.stats();
    assert_eq!(first.inserts, 1);
    assert_eq!(table.bytes_read() - after_open, props.data_bytes);
    // The first block in the file, with its trailer: the second scan finds it cached.
    let first_block =
        first.usage_bytes - crate::cache::BLOCK_OVERHEAD as u64 + format::BLOCK_TRAILER_LEN as u64;
    assert_eq!(collect_forward(&mut table.iter()).unwrap(), entries);
    let s = cache.stats();
    assert_eq!(s.inserts, props.num_data_blocks);
    // Each block is charged its stored bytes (contents and trailer) plus the overhead;
    // only the first, read alone before the scan was detected, has no trailer in memory.
    assert_eq!(
        s.usage_bytes,
        props.data_bytes - format::BLOCK_TRAILER_LEN as u64
            + props.num_data_blocks * crate::cache::BLOCK_OVERHEAD as u64,
        "{s:?} {props:?}"
    );
    // Repeats, either way, are served by the cache: no reads, no copies.
    let after_scan = table.bytes_read();
    assert_eq!(after_scan - after_open, 2 * props.data_bytes - first_block);
    assert_eq!(collect_forward(&mut table.iter()).unwrap(), entries);
    assert_eq!(collect_backward(&mut table.iter()).unwrap(), entries);
    assert_eq!(table.bytes_read(), after_scan);
    let s2 = cache.stats();
    assert_eq!((s2.inserts, s2.detached), (s.inserts, 0), "{s2:?}");
}

#[test]
fn corrupt_block_in_a_shared_window_names_file_and_offset() {
    let fs = MemFs::new();
    let entries = uncompressed_table(&fs, "/w.sst", 5);
    let mid = fs_table_data_bytes(&fs, "/w.sst") / 2;
    fs.corrupt_byte(Path::new("/w.sst"), mid).unwrap();
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = open_cached(&fs, "/w.sst", &cache).unwrap();
    // verify() reads the bad block alone; a scan takes it from a window (forward and
    // backward): all name the same file and block offset.
    let Err(Error::Corruption { file, offset, .. }) = table.verify() else {
        panic!("verify passed a corrupt table");
    };
    assert_eq!(file, "/w.sst");
    assert!(
        offset > 0 && offset <= mid && mid - offset < 1200,
        "{offset} {mid}"
    );
    for backward in [false, true, false] {
        let mut it = table.iter();
        let r = if backward {
            collect_backward(&mut it)
        } else {
            collect_forward(&mut it)
        };
        match r {
            Err(Error::Corruption {
                file: f,
                offset: o,
                reason,
            }) => {
                assert_eq!((f.as_str(), o), ("/w.sst", offset), "{reason}");
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Blocks of the same windows that passed their checks were cached and stay good.
    let s = cache.stats();
    assert!(s.inserts > 0 && s.hits > 0, "{s:?}");
    let uk = crate::key::user_key(&entries[0].0);
    assert_eq!(
        kv(table.get(uk, 5).unwrap()),
        Some((ValueKind::Value, vec![5; 100]))
    );
}

/// Bytes of data blocks (with trailers) of the table at `path`.
fn fs_table_data_bytes(fs: &MemFs, path: &str) -> u64 {
    open(fs, path).unwrap().properties().data_bytes
}

#[test]
fn a_cache_smaller_than_the_scans_windows_keeps_copies_and_pins_no_window() {
    let fs = MemFs::new();
    let entries = uncompressed_table(&fs, "/w.sst", 6);
    // Room for a few blocks only, less than one readahead window: a block cached as a
    // slice would keep a whole window alive for the few bytes it is charged.
    let cache = Arc::new(BlockCache::new(8 << 10));
    let table = open_cached(&fs, "/w.sst", &cache).unwrap();
    let mut it = table.iter();
    // A scan is long once it took half the cache (4 KiB) from windows: the repeat caches
    // only the window blocks it took before then (as copies: they must not pin their
    // window), and the first block, read alone before the scan was detected.
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    let stats = cache.stats();
    assert!(cache.usage_bytes() <= 8 << 10);
    assert!(table.properties().num_data_blocks > 20);
    assert!(stats.inserts <= 6, "{stats:?}");
    assert!(stats.detached + 1 >= stats.inserts, "{stats:?}");
    drop(it);
    // No cached block holds a window: all of them are freed with the iterator.
    assert_eq!(
        cache
            .window_total()
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Cached copies still answer reads.
    let last = crate::key::user_key(&entries[entries.len() - 1].0);
    assert!(table.get(last, 5).unwrap().is_some());
    assert!(table.get(last, 5).unwrap().is_some());
    assert!(cache.stats().hits >= 1);
}

#[test]
fn a_one_off_scan_does_not_evict_blocks_point_reads_keep_hot() {
    let fs = MemFs::new();
    block_cache_table(&fs, "/hot.sst", 1);
    // Room for ~50 of the 1 KiB blocks.
    let cache = Arc::new(BlockCache::new(64 << 10));
    let hot = open_cached(&fs, "/hot.sst", &cache).unwrap();
    // A full cache first (while it fills, quick_cache admits blocks to its hot section).
    for f in 0..2u8 {
        let path = format!("/fill{f}.sst");
        let entries = block_cache_table(&fs, &path, f);
        let table = open_cached(&fs, &path, &cache).unwrap();
        for (k, _) in &entries {
            table.get(crate::key::user_key(k), 5).unwrap();
        }
    }
    let keys: Vec<String> = (0..8).map(|i| format!("key{:05}", i * 50)).collect();
    for _ in 0..2 {
        for k in &keys {
            assert!(hot.get(k.as_bytes(), 5).unwrap().is_some());
        }
    }
    let hot_read = hot.bytes_read();
    let before = cache.stats();
    // One table of ~450 blocks, ~7 times the cache.
    let entries: Entries = (0..4000u32)
        .map(|i| {
            (
                internal_key(format!("key{i:05}").as_bytes(), 1, ValueKind::Value),
                vec![7; 100],
            )
        })
        .collect();
    let opts = TableOptions {
        block_size: 1024,
        compression: CompressionType::None,
        ..TableOptions::default()
    };
    write_table(&fs, "/scan.sst", &entries, &opts);
    let table = open_cached(&fs, "/scan.sst", &cache).unwrap();
    assert_eq!(collect_forward(&mut table.iter()).unwrap(), entries);
    // Only the block the scan read alone before its readahead started was cached.
    let after = cache.stats();
    assert!(after.inserts - before.inserts <= 1, "{before:?} {after:?}");
    for k in &keys {
        assert!(hot.get(k.as_bytes(), 5).unwrap().is_some());
    }
    assert_eq!(
        hot.bytes_read(),
        hot_read,
        "a hot block was evicted by the scan"
    );
}

/// A scan that crosses blocks looks the next one up in the cache ahead of time (both
/// directions): with every other block cached, forward and backward scans, direction
/// changes and seeks in the middle return every entry, each block is counted once as a
/// hit or a miss, and a looked-ahead block that the cursor does not move to is not used.
#[test]
fn scans_look_ahead_across_cached_blocks() {
    let fs = MemFs::new();
    let entries = block_cache_table(&fs, "/a.sst", 3);
    let cache = Arc::new(BlockCache::new(1 << 20));
    let table = open_cached(&fs, "/a.sst", &cache).unwrap();
    let blocks = table.properties().num_data_blocks;
    // Point reads cache about every other block.
    for i in (0..400).step_by(20) {
        table.get(format!("key{i:05}").as_bytes(), 5).unwrap();
    }
    let s0 = cache.stats();
    let mut it = table.iter();
    assert_eq!(collect_forward(&mut it).unwrap(), entries);
    let s1 = cache.stats();
    assert_eq!((s1.hits + s1.misses) - (s0.hits + s0.misses), blocks);
    assert!(s1.hits > s0.hits, "{s1:?}");
    assert_eq!(collect_backward(&mut it).unwrap(), entries);
    let s2 = cache.stats();
    assert_eq!((s2.hits + s2.misses) - (s1.hits + s1.misses), blocks);

    // Zig-zag walks with seeks, against the sorted entries.
    let mut rng = Rng(7);
    for _ in 0..20 {
        let mut at = rng.below(entries.len() as u64) as usize;
        it.seek(&entries[at].0).unwrap();
        for _ in 0..300 {
            if rng.below(3) == 0 {
                it.prev().unwrap();
                match at.checked_sub(1) {
                    Some(i) => at = i,
                    None => {
                        assert!(!it.valid());
                        break;
                    }
                }
            } else {
                it.next().unwrap();
                at += 1;
                if at == entries.len() {
                    assert!(!it.valid());
                    break;
                }
            }
            assert!(it.valid());
            assert_eq!(
                (it.key(), it.value()),
                (&entries[at].0[..], &entries[at].1[..])
            );
        }
    }
}

#[test]
fn a_scan_longer_than_half_the_cache_neither_looks_up_nor_admits_its_window_blocks() {
    let fs = MemFs::new();
    let entries = uncompressed_table(&fs, "/l.sst", 7);
    let blocks = open(&fs, "/l.sst").unwrap().properties().num_data_blocks;
    // Half the cache is 16 KiB: about a third of the table's ~46 KiB.
    let cache = Arc::new(BlockCache::new(32 << 10));
    let table = open_cached(&fs, "/l.sst", &cache).unwrap();
    // A block point reads keep hot, at the end of the table.
    let last = crate::key::user_key(&entries[entries.len() - 1].0);
    assert!(table.get(last, 5).unwrap().is_some());
    let before = cache.stats();
    for _ in 0..3 {
        assert_eq!(collect_forward(&mut table.iter()).unwrap(), entries);
        assert_eq!(collect_backward(&mut table.iter()).unwrap(), entries);
    }
    let s = cache.stats();
    // Each scan looked up its blocks only until it had taken 16 KiB from windows (and the
    // ones read outside a window): well under half of them.
    let lookups = (s.hits + s.misses) - (before.hits + before.misses);
    assert!(
        lookups < 6 * blocks / 2,
        "{lookups} lookups, {blocks} blocks: {s:?}"
    );
    // Repeats cached only the blocks of the scans' short starts (blocks of 1 KiB and
    // more: at most 16 of them a scan, and the one read alone), not every block they
    // had seen before.
    assert!(s.inserts - before.inserts <= 6 * 17, "{s:?} {blocks}");
    assert!(blocks > 30);
    assert!(cache.usage_bytes() <= 32 << 10);
    // The point read's block is still cached: the read hits.
    let hits = cache.stats().hits;
    assert!(table.get(last, 5).unwrap().is_some());
    assert_eq!(cache.stats().hits, hits + 1);
    // A seek starts a new, short scan: the repeat of a short range is cached again.
    let mut it = table.iter();
    let from = seek_key(b"key00100", 5);
    let scan_20 = |it: &mut TableIterator| {
        it.seek(&from).unwrap();
        for (k, _) in &entries[100..120] {
            assert_eq!(it.key(), &k[..]);
            it.next().unwrap();
        }
    };
    scan_20(&mut it);
    scan_20(&mut it);
    let s1 = cache.stats();
    scan_20(&mut it);
    let s2 = cache.stats();
    assert_eq!(
        s2.misses, s1.misses,
        "a short repeated range missed: {s2:?}"
    );
    assert!(s2.hits > s1.hits);
}
