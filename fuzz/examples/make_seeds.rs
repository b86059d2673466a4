//! Writes the seed corpora of every fuzz target into `fuzz/seeds/<target>/`: a few small,
//! valid (and some deliberately damaged) encodings made by the real writers, so that the
//! fuzzer starts from deep inside each format.
//!
//! Run from `fuzz/`: `cargo run --example make_seeds`. Deterministic, so regenerating
//! shows up in `git diff` only when a format changes, except for the manifest seed: its
//! edits depend on when the background flush and compaction ran.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_fuzz::fixtures::{hint_base, index_base};
use strata_fuzz::{join, SeedRng};
use strata_kv::bitcask::format::{encode_merge_commit, encode_record};
use strata_kv::bitcask::{Bitcask, BitcaskOptions};
use strata_kv::filename::{manifest_path, parse_file_name, FileType};
use strata_kv::fs::{FileSystem, MemFs};
use strata_kv::key::{internal_key, ValueKind};
use strata_kv::manifest::{read_current, FileMeta, VersionEdit};
use strata_kv::sstable::block::BlockBuilder;
use strata_kv::sstable::format::{Footer, FOOTER_LEN};
use strata_kv::sstable::TableBuilder;
use strata_kv::wal::{LogWriter, WAL_MAGIC};
use strata_kv::{CompressionType, Db, Options, TableOptions, WriteBatch, WriteOptions};
use strata_tsdb::chunk::XorAppender;
use strata_tsdb::labels::Labels;
use strata_tsdb::wal::{encode_samples, encode_series, RefSample, TSDB_WAL_MAGIC};

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(name), bytes).expect("write seed");
    }

    /// The same bytes behind each mode byte.
    fn put_modes(&self, target: &str, name: &str, modes: &[u8], bytes: &[u8]) {
        for &m in modes {
            let mut b = vec![m];
            b.extend_from_slice(bytes);
            self.put(target, &format!("{name}-m{m}"), &b);
        }
    }
}

fn batches() -> Vec<WriteBatch> {
    let mut a = WriteBatch::new();
    a.put(b"apple", b"red").put(b"banana", b"yellow");
    let mut b = WriteBatch::new();
    b.delete(b"apple").delete_range(b"c", b"d");
    let mut c = WriteBatch::new();
    c.put(b"k\x00ey", vec![7u8; 40]);
    vec![a, b, c]
}

fn wal_file(payloads: &[Vec<u8>]) -> Vec<u8> {
    let fs = MemFs::new();
    let path = Path::new("000002.log");
    let mut w =
        LogWriter::new(fs.create(path).expect("create"), "000002.log", WAL_MAGIC).expect("writer");
    for p in payloads {
        w.add_record(p).expect("record");
    }
    drop(w);
    fs.read_file(path).expect("read")
}

fn table(compression: CompressionType, n: u64, bloom: u32) -> Vec<u8> {
    let fs = MemFs::new();
    let path = Path::new("t.sst");
    let opts = TableOptions {
        block_size: 128,
        block_restart_interval: 3,
        compression,
        bloom_bits_per_key: bloom,
        ..TableOptions::default()
    };
    let mut b = TableBuilder::new(fs.create(path).expect("create"), "t.sst", &opts);
    for i in 0..n {
        let kind = if i % 5 == 4 {
            ValueKind::Deletion
        } else {
            ValueKind::Value
        };
        let v = if kind == ValueKind::Value {
            format!("v{i}").repeat(3).into_bytes()
        } else {
            Vec::new()
        };
        b.add(
            &internal_key(format!("k{:03}", i / 2).as_bytes(), 100 - i, kind),
            &v,
        )
        .expect("add");
    }
    b.finish().expect("finish");
    fs.read_file(path).expect("read")
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let s = Seeds { root };

    // WAL.
    let payloads: Vec<Vec<u8>> = batches().iter().map(|b| b.encoded().to_vec()).collect();
    let wal = wal_file(&payloads);
    s.put_modes("wal_reader", "three-batches", &[0, 1], &wal);
    s.put_modes("wal_reader", "torn", &[0], &wal[..wal.len() - 7]);
    s.put_modes("wal_reader", "empty", &[0], &wal[..16]);

    // A real database's WAL, for recovery.
    let fs = Arc::new(MemFs::new());
    let dir = Path::new("/db");
    let db = Db::open(
        dir,
        Options {
            fs: fs.clone(),
            ..Options::default()
        },
    )
    .expect("open");
    db.put(b"a", b"1").expect("put");
    db.abandon();
    let db = Db::open(
        dir,
        Options {
            fs: fs.clone(),
            ..Options::default()
        },
    )
    .expect("reopen");
    for b in batches() {
        db.write(b, WriteOptions { sync: true }).expect("write");
    }
    db.abandon();
    let mut wals: Vec<String> = fs
        .list_dir(dir)
        .expect("list")
        .into_iter()
        .filter(|n| matches!(parse_file_name(n), Some(FileType::Wal(_))))
        .collect();
    wals.sort();
    let real_wal = fs
        .read_file(&dir.join(wals.last().expect("wal")))
        .expect("read");
    s.put_modes("db_recovery", "batches", &[0, 2], &real_wal);

    // SSTable pieces.
    let mut bb = BlockBuilder::new(2);
    for i in 0..9u64 {
        bb.add(
            &internal_key(format!("key{i}").as_bytes(), 9 - i, ValueKind::Value),
            format!("val{i}").as_bytes(),
        );
    }
    s.put("sstable_block", "data-block", &bb.finish());
    let ib = index_base();
    s.put("sstable_block", "index-block", &ib.index);
    s.put("sstable_index", "genuine", &ib.index);
    s.put(
        "sstable_index",
        "truncated",
        &ib.index[..ib.index.len() / 2],
    );
    s.put(
        "sstable_filter",
        "keys",
        &join(&[vec![10], b"alpha".to_vec(), b"beta".to_vec(), b"".to_vec()]),
    );
    for (name, c, n, bloom) in [
        ("none", CompressionType::None, 30, 10),
        ("lz4", CompressionType::Lz4, 60, 10),
        ("zstd", CompressionType::Zstd, 40, 0),
        ("empty", CompressionType::None, 0, 10),
    ] {
        let t = table(c, n, bloom);
        s.put_modes("sstable_table", name, &[0, 1], &t);
        let footer_at = t.len() - FOOTER_LEN;
        let mut f = (t.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(&t[footer_at..]);
        s.put("sstable_footer", &format!("footer-{name}"), &f);
        if name == "lz4" {
            let footer = Footer::decode(&t[footer_at..], "t", t.len() as u64).expect("footer");
            let p = footer.properties;
            let mut pb = 0u64.to_le_bytes().to_vec();
            pb.extend_from_slice(&t[p.offset as usize..(p.offset + p.size) as usize]);
            s.put("sstable_footer", "properties", &pb);
        }
    }

    // Manifest.
    let edit = VersionEdit {
        log_number: Some(4),
        next_file_number: Some(9),
        last_sequence: Some(77),
        new_files: vec![(
            1,
            FileMeta {
                number: 5,
                file_size: 4096,
                smallest: internal_key(b"a", 3, ValueKind::Value),
                largest: internal_key(b"z", 9, ValueKind::Deletion),
                smallest_seq: 3,
                largest_seq: 9,
                num_entries: 12,
                num_deletions: 1,
            },
        )],
        deleted_files: vec![(0, 3)],
        ..VersionEdit::default()
    };
    s.put("manifest_edit", "full", &edit.encode());
    s.put(
        "manifest_edit",
        "counters",
        &VersionEdit::default().encode(),
    );
    let db = Db::open(
        Path::new("/m"),
        Options {
            fs: fs.clone(),
            write_buffer_size: 256,
            ..Options::default()
        },
    )
    .expect("open");
    for i in 0..50u32 {
        db.put(format!("key{i}"), vec![b'v'; 40]).expect("put");
    }
    db.delete_range(b"key1", b"key2").expect("delete range");
    db.flush().expect("flush");
    db.compact_range::<&[u8]>(..).expect("compact");
    db.close().expect("close");
    let n = read_current(fs.as_ref(), Path::new("/m")).expect("current");
    let manifest = fs
        .read_file(&manifest_path(Path::new("/m"), n))
        .expect("manifest");
    s.put_modes("manifest_replay", "real", &[0, 1], &manifest);

    // Bitcask.
    let mut rec = Vec::new();
    encode_record(&mut rec, 42, b"key", Some(b"value"));
    s.put("bitcask_record", "put", &rec);
    let mut tomb = Vec::new();
    encode_record(&mut tomb, 43, b"key", None);
    s.put("bitcask_record", "tombstone", &tomb);
    s.put(
        "bitcask_record",
        "merge-commit",
        &encode_merge_commit(7, &[1, 2, 5]),
    );
    let bfs = Arc::new(MemFs::new());
    let bc = Bitcask::open(
        "/bc",
        BitcaskOptions {
            fs: bfs.clone(),
            max_file_size: 400,
            ..BitcaskOptions::default()
        },
    )
    .expect("open");
    for i in 0..12u32 {
        bc.put(format!("k{i}"), format!("value{i}")).expect("put");
    }
    bc.delete("k3").expect("delete");
    let mut batch = WriteBatch::new();
    batch.put(b"b1", b"x").put(b"b2", b"y").delete(b"k4");
    bc.write(batch, WriteOptions::default()).expect("batch");
    bc.close().expect("close");
    let mut names = bfs.list_dir(Path::new("/bc")).expect("list");
    names.sort();
    let datas: Vec<Vec<u8>> = names
        .iter()
        .filter(|n| n.ends_with(".data"))
        .take(3)
        .map(|n| bfs.read_file(&Path::new("/bc").join(n)).expect("read"))
        .collect();
    s.put_modes("bitcask_data", "files", &[0, 2], &join(&datas));
    if let Some(last) = datas.last() {
        s.put_modes("bitcask_data", "one", &[0], last);
        s.put_modes("bitcask_data", "headerless", &[4], &last[24..]);
    }
    let hb = hint_base();
    s.put_modes("bitcask_hint", "genuine", &[0, 1], &hb.hint_bytes);
    s.put_modes("bitcask_hint", "headerless", &[2], &hb.hint_bytes[24..]);

    // TSDB.
    let mut rng = SeedRng::new(9);
    let mut regular = XorAppender::new();
    let mut jittery = XorAppender::new();
    let mut odd = XorAppender::new();
    let mut samples = Vec::new();
    for i in 0..120i64 {
        regular
            .append(1_700_000_000_000 + i * 15_000, 1.0)
            .expect("append");
        let t = 1_700_000_000_000 + i * 15_000 + rng.below(200) as i64;
        let v = (rng.below(1_000_000) as f64) / 7.0;
        jittery.append(t, v).expect("append");
        samples.push((t, v));
    }
    for (t, v) in [
        (i64::MIN, f64::from_bits(0x7ff0_0000_0000_0002)),
        (i64::MAX, -0.0),
        (0, f64::INFINITY),
        (0, f64::NEG_INFINITY),
        (-5, f64::MIN_POSITIVE),
    ] {
        odd.append(t, v).expect("append");
    }
    for (name, c) in [("regular", &regular), ("jittery", &jittery), ("odd", &odd)] {
        s.put("tsdb_chunk", name, c.chunk().bytes());
    }
    s.put("tsdb_chunk", "empty", XorAppender::new().chunk().bytes());
    let mut rt = vec![3u8];
    for &(t, v) in samples.iter().take(20) {
        rt.extend_from_slice(&t.to_le_bytes());
        rt.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    s.put("tsdb_xor_roundtrip", "jittery", &rt);
    let labels = [
        Labels::from_pairs([("__name__", "up"), ("job", "node")]).expect("labels"),
        Labels::from_pairs([("a", "x\0y"), ("b", "\u{fe}\u{1f600}")]).expect("labels"),
        Labels::empty(),
    ];
    for (i, l) in labels.iter().enumerate() {
        s.put("labels_decode", &format!("set{i}"), &l.encode());
    }

    // PromQL.
    let queries = [
        "rate(http_requests_total{job=\"api\"}[5m])",
        "sum by (job) (rate(http_requests_total[1m])) / ignoring(code) group_left up",
        "histogram_quantile(0.9, sum by (le) (rate(rpc_seconds_bucket[5m])))",
        "max_over_time(deriv(up[10m:30s])[5m:]) offset 1m @ 300",
        "topk(2, -http_requests_total) or label_replace(up, \"x\", \"$1\", \"job\", \"(.*)\")",
        "count_values(\"v\", http_requests_total % 3) > bool 1 unless on() vector(1)",
        "{__name__=~\"http.*|up\", code!~\"5..\"} and absent(nope)",
    ];
    for (i, q) in queries.iter().enumerate() {
        let mut b = vec![(i * 20) as u8, i as u8];
        b.extend_from_slice(q.as_bytes());
        s.put("promql", &format!("q{i}"), &b);
    }

    // The TSDB WAL: records (mode 0, split at SEP) and whole segments (modes 1, 3).
    let up = Labels::from_pairs([("__name__", "up"), ("job", "a")]).expect("labels");
    let odd = Labels::from_pairs([("__name__", "x"), ("v", "\u{e9}\n\"")]).expect("labels");
    let samples: Vec<RefSample> = (0..12i64)
        .map(|i| RefSample {
            r: 1 + (i as u64 % 2),
            t: 1_700_000_000_000 + i * 15_000 - (i % 4) * 20_000,
            v: if i == 5 { f64::NAN } else { i as f64 * 0.25 },
        })
        .collect();
    let records = vec![
        encode_series(&[(1, &up), (2, &odd)]),
        encode_samples(&samples),
        encode_samples(&samples[..2]),
    ];
    s.put_modes("tsdb_wal", "records", &[0], &join(&records));
    let fs = MemFs::new();
    let path = Path::new("00000001.log");
    let mut w =
        LogWriter::new(fs.create(path).expect("create"), "seg", TSDB_WAL_MAGIC).expect("writer");
    for r in &records {
        w.add_record(r).expect("record");
    }
    drop(w);
    let seg = fs.read_file(path).expect("read");
    s.put_modes("tsdb_wal", "segment", &[1, 3], &seg);
    s.put_modes("tsdb_wal", "torn", &[1], &seg[..seg.len() - 5]);

    // Remote write and read: raw protobuf (mode 1) and snappy bodies (mode 0).
    use prost::Message;
    use strata_server::prompb;
    let label = |n: &str, v: &str| prompb::Label {
        name: n.into(),
        value: v.into(),
    };
    let write = prompb::WriteRequest {
        timeseries: vec![
            prompb::TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "a")],
                samples: vec![
                    prompb::Sample {
                        value: 1.0,
                        timestamp: 1_700_000_000_000,
                    },
                    prompb::Sample {
                        value: f64::NAN,
                        timestamp: 1_700_000_015_000,
                    },
                ],
                ..prompb::TimeSeries::default()
            },
            prompb::TimeSeries {
                labels: vec![
                    label("job", "b"),
                    label("__name__", "x_total"),
                    label("e", ""),
                ],
                samples: vec![prompb::Sample {
                    value: -2.5,
                    timestamp: 5,
                }],
                exemplars: vec![prompb::Exemplar {
                    labels: vec![label("trace", "1")],
                    value: 1.0,
                    timestamp: 5,
                }],
                histograms: vec![prompb::Histogram { timestamp: 9 }],
            },
            prompb::TimeSeries {
                labels: vec![label("no_name", "1")],
                samples: vec![prompb::Sample {
                    value: 0.0,
                    timestamp: 1,
                }],
                ..prompb::TimeSeries::default()
            },
        ],
        metadata: vec![prompb::MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "Up.".into(),
            unit: String::new(),
        }],
    }
    .encode_to_vec();
    let snappy = |b: &[u8]| snap::raw::Encoder::new().compress_vec(b).expect("snappy");
    s.put_modes("remote_write", "request", &[1], &write);
    s.put_modes("remote_write", "request-snappy", &[0], &snappy(&write));
    let matcher = |t: i32, n: &str, v: &str| prompb::LabelMatcher {
        r#type: t,
        name: n.into(),
        value: v.into(),
    };
    let read = prompb::ReadRequest {
        queries: vec![
            prompb::Query {
                start_timestamp_ms: -60_000,
                end_timestamp_ms: 600_000,
                matchers: vec![matcher(0, "__name__", "up"), matcher(2, "job", "a|b")],
            },
            prompb::Query {
                start_timestamp_ms: 0,
                end_timestamp_ms: 100_000,
                matchers: vec![matcher(2, "__name__", ".+"), matcher(3, "i", "1")],
            },
            prompb::Query {
                start_timestamp_ms: 10,
                end_timestamp_ms: 5,
                matchers: vec![matcher(1, "job", "")],
            },
        ],
        accepted_response_types: vec![1, 0],
    }
    .encode_to_vec();
    s.put_modes("remote_read", "request", &[1], &read);
    s.put_modes("remote_read", "request-snappy", &[0], &snappy(&read));

    // Line protocol (mode 0 + precision bits), exposition (1), OpenMetrics (2), all (3).
    let lp = "cpu,host=a,region=eu-1 usage=1.5,count=3i,up=true,note=\"x y\" 1700000000000000000\n\
              mem,host=b\\ c free=2u 1700000015000000000\nm v=-1e3\n# comment\nbad line\n";
    s.put_modes("text_formats", "line-protocol", &[0, 4, 12], lp.as_bytes());
    let expo = "# HELP up Up.\n# TYPE up gauge\nup{job=\"a\",instance=\"x:1\"} 1 1700000000000\n\
                esc{v=\"a\\\"b\\\\c\\nd\"} +Inf\nNaN_total NaN 5\nbroken{x=} 1\n";
    s.put_modes("text_formats", "exposition", &[1, 3], expo.as_bytes());
    let om = "# TYPE a gauge\na{x=\"1\"} 2.5 1700000000.123\na_total -0 -1.5\n# EOF\n";
    s.put_modes("text_formats", "openmetrics", &[2], om.as_bytes());
}
