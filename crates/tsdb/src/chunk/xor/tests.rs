use super::*;
use proptest::prelude::*;

/// Prometheus' stale marker, a NaN with a payload.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn encode(samples: &[(i64, f64)]) -> XorChunk {
    let mut app = XorAppender::new();
    for &(t, v) in samples {
        app.append(t, v).expect("append");
    }
    app.into_chunk()
}

fn decode(chunk: &XorChunk) -> Vec<(i64, u64)> {
    chunk
        .iter()
        .map(|s| s.map(|(t, v)| (t, v.to_bits())))
        .collect::<Result<_>>()
        .expect("decodes")
}

fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
    samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

#[test]
fn empty_chunk_is_just_the_header() {
    let c = XorChunk::new();
    assert_eq!(c.bytes(), &[Encoding::Xor as u8, 0, 0]);
    assert_eq!(c.num_samples(), 0);
    assert_eq!(c.iter().count(), 0);
}

#[test]
fn special_floats_round_trip_bit_exactly() {
    let values = [
        f64::from_bits(STALE_NAN),
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff8_dead_beef_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        f64::from_bits(1), // smallest subnormal
        f64::MAX,
        f64::MIN,
        f64::from_bits(STALE_NAN),
    ];
    let samples: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as i64 * 15_000, v))
        .collect();
    assert_eq!(decode(&encode(&samples)), bits(&samples));
}

#[test]
fn extreme_and_unordered_timestamps_round_trip() {
    let samples = [
        (i64::MAX, 1.0),
        (i64::MIN, 2.0),
        (i64::MAX, 3.0),
        (0, 4.0),
        (0, 5.0),
        (-1, 6.0),
        (1 << 40, 7.0),
        (-(1 << 40), 8.0),
        (i64::MIN, 9.0),
        (i64::MIN, 9.0),
    ];
    assert_eq!(decode(&encode(&samples)), bits(&samples));
}

#[test]
fn dod_bucket_boundaries_round_trip() {
    // For each bucket width, the extremes of its range and one past them.
    let mut dods = vec![0i64, 1, -1, i64::MAX, i64::MIN];
    for n in [14u32, 17, 20] {
        let half = 1i64 << (n - 1);
        dods.extend([half, half + 1, -(half - 1), -half]);
    }
    for dod in dods {
        let t1 = 1_000i64;
        let t2 = t1.wrapping_add(1_000i64.wrapping_add(dod));
        let samples = [(0, 1.0), (t1, 1.0), (t2, 1.0), (t2, 1.0)];
        assert_eq!(decode(&encode(&samples)), bits(&samples), "dod {dod}");
    }
}

#[test]
fn regular_timestamps_and_constant_value_cost_two_bits_per_sample() {
    let samples: Vec<_> = (0..120)
        .map(|i| (1_700_000_000_000 + i * 15_000, 42.0))
        .collect();
    let c = encode(&samples);
    // header 3 + t0 varint 6 + v0 8 + delta varint 3 + 2 bits per sample after.
    assert_eq!(
        c.bytes().len(),
        HEADER_SIZE + 6 + 8 + 3 + (1usize + 118 * 2).div_ceil(8)
    );
}

#[test]
fn resume_continues_a_chunk() {
    let samples: Vec<_> = (0..50)
        .map(|i| (i * 1_000 + (i % 3), (i as f64).sqrt()))
        .collect();
    for split in [0, 1, 2, 3, 17, 50] {
        let mut app = XorAppender::resume(encode(&samples[..split])).expect("resume");
        for &(t, v) in &samples[split..] {
            app.append(t, v).expect("append");
        }
        assert_eq!(app.chunk(), &encode(&samples), "split at {split}");
    }
}

#[test]
fn full_chunk_refuses_appends() {
    let mut app = XorAppender::new();
    for i in 0..MAX_SAMPLES {
        app.append(i as i64, 0.0).expect("append");
    }
    assert_eq!(
        app.append(0, 0.0),
        Err(ChunkError::Full { max: MAX_SAMPLES })
    );
    assert_eq!(app.chunk().num_samples(), MAX_SAMPLES);
    assert_eq!(app.chunk().iter().count(), MAX_SAMPLES);
}

#[test]
fn truncated_chunk_is_corrupt_not_short() {
    let samples: Vec<_> = (0..30).map(|i| (i * 15_000, i as f64 * 1.5)).collect();
    let full = encode(&samples).into_bytes();
    for len in HEADER_SIZE + 1..full.len() {
        let c = XorChunk::from_bytes(full[..len].to_vec()).expect("header is intact");
        let res: Result<Vec<_>> = c.iter().collect();
        assert!(
            matches!(res, Err(ChunkError::Corrupt { .. })),
            "truncated to {len} bytes: {res:?}"
        );
    }
}

#[test]
fn trailing_bytes_and_bad_padding_are_corrupt() {
    let mut bytes = encode(&[(1, 1.0), (2, 2.0), (3, 3.0)]).into_bytes();
    bytes.push(0);
    let c = XorChunk::from_bytes(bytes).expect("header");
    let out: Vec<_> = c.iter().collect();
    assert_eq!(out.len(), 4, "three samples then the error");
    assert!(matches!(out[3], Err(ChunkError::Corrupt { .. })));

    let mut bytes = encode(&[(1, 1.0), (2, 1.0), (3, 1.0)]).into_bytes();
    *bytes.last_mut().expect("non-empty") |= 1; // last bits are padding here
    let res: Result<Vec<_>> = XorChunk::from_bytes(bytes)
        .expect("header")
        .iter()
        .collect();
    assert!(matches!(res, Err(ChunkError::Corrupt { .. })), "{res:?}");
}

#[test]
fn bad_headers_are_rejected() {
    assert!(matches!(
        XorChunk::from_bytes(vec![1, 0]),
        Err(ChunkError::Corrupt { .. })
    ));
    assert_eq!(
        XorChunk::from_bytes(vec![2, 0, 0]),
        Err(ChunkError::UnknownEncoding(2))
    );
    assert!(matches!(
        XorChunk::from_bytes(vec![1, 0, 0, 7]),
        Err(ChunkError::Corrupt { offset: 3, .. })
    ));
}

/// A deterministic xorshift generator, so the size test measures the same data every run.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Encodes `series` in chunks of 120 samples (the head's cut, as in Prometheus) and returns
/// bytes per sample, headers included.
fn bytes_per_sample(series: &[(i64, f64)]) -> f64 {
    let total: usize = series.chunks(120).map(|c| encode(c).bytes().len()).sum();
    total as f64 / series.len() as f64
}

#[test]
fn compression_on_realistic_series() {
    const N: i64 = 120 * 100;
    let start = 1_700_000_000_000i64;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);

    // A counter incrementing by small integers, scraped every 15 s exactly.
    let mut c = 0.0;
    let counter: Vec<_> = (0..N)
        .map(|i| {
            c += (rng.next() % 10) as f64;
            (start + i * 15_000, c)
        })
        .collect();
    // The same counter with real-world scrape jitter of a few milliseconds.
    let jittered: Vec<_> = counter
        .iter()
        .map(|&(t, v)| (t + (rng.next() % 20) as i64 - 10, v))
        .collect();
    // A gauge random-walking with two decimals (e.g. a temperature).
    let mut g: i64 = 2_000;
    let gauge: Vec<_> = (0..N)
        .map(|i| {
            g += (rng.next() % 21) as i64 - 10;
            (start + i * 15_000, g as f64 / 100.0)
        })
        .collect();
    // A constant (e.g. `up`).
    let constant: Vec<_> = (0..N).map(|i| (start + i * 15_000, 1.0)).collect();

    for (name, series, max) in [
        ("counter", &counter, 2.5),
        ("counter+jitter", &jittered, 4.0),
        ("gauge(2 decimals)", &gauge, 8.0),
        ("constant", &constant, 0.5),
    ] {
        assert_eq!(decode(&encode(&series[..120])), bits(&series[..120]));
        let bps = bytes_per_sample(series);
        // The compacted encoding, on a day of 15 s samples per chunk (5760, as partition
        // compaction writes them), must beat Gorilla by far on the same data.
        let dec: usize = series
            .chunks(5760)
            .map(|c| crate::chunk::decimal::encode(c, 9).unwrap().len())
            .sum();
        let dps = dec as f64 / series.len() as f64;
        println!(
            "{name:>18}: {bps:.3} bytes/sample (XOR, 120/chunk), {dps:.3} (decimal, 5760/chunk)"
        );
        assert!(bps <= max, "{name}: {bps:.3} bytes/sample > {max}");
        assert!(
            dps < bps / 1.9 || dps < 0.05,
            "{name}: decimal {dps:.3} vs XOR {bps:.3}"
        );
    }
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::from_bits(STALE_NAN)),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.0),
        (-1000i64..1000).prop_map(|x| x as f64 / 100.0),
        (0u32..100).prop_map(f64::from),
    ]
}

fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(15_000i64),
        (14_990i64..15_010),
        (-10i64..10),
        (-(1i64 << 21)..(1i64 << 21)),
        any::<i64>(),
    ]
}

fn series() -> impl Strategy<Value = Vec<(i64, f64)>> {
    (
        any::<i64>(),
        proptest::collection::vec((delta(), value()), 0..300),
    )
        .prop_map(|(t0, steps)| {
            let mut t = t0;
            steps
                .into_iter()
                .map(|(d, v)| {
                    t = t.wrapping_add(d);
                    (t, v)
                })
                .collect()
        })
}

proptest! {
    #[test]
    fn round_trip_is_bit_exact(samples in series()) {
        let c = encode(&samples);
        prop_assert_eq!(c.num_samples(), samples.len());
        prop_assert_eq!(decode(&c), bits(&samples));
        // And through stored bytes.
        let again = XorChunk::from_bytes(c.bytes().to_vec()).expect("valid");
        prop_assert_eq!(decode(&again), bits(&samples));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..512),
        set_encoding: bool,
    ) {
        if set_encoding && !bytes.is_empty() {
            bytes[0] = Encoding::Xor as u8;
        }
        if let Ok(c) = XorChunk::from_bytes(bytes) {
            let n = c.num_samples();
            let mut yielded = 0;
            for s in c.iter() {
                yielded += 1;
                if s.is_err() {
                    break;
                }
            }
            prop_assert!(yielded <= n + 1);
            let _ = XorAppender::resume(c);
        }
    }

    #[test]
    fn corrupting_a_valid_chunk_never_panics(
        samples in series(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&samples).into_bytes();
        for (pos, mask) in flips {
            let i = pos % bytes.len();
            bytes[i] ^= mask;
        }
        if let Ok(c) = XorChunk::from_bytes(bytes) {
            for s in c.iter() {
                if s.is_err() {
                    break;
                }
            }
        }
    }
}

#[test]
fn prometheus_encoding_differs_only_in_the_first_delta() {
    let samples: Vec<(i64, f64)> = (0..50)
        .map(|i| {
            (
                1_700_000_000_000 + i * 15_000 + (i % 3),
                (i * i) as f64 / 4.0,
            )
        })
        .collect();
    let mut app = XorAppender::new();
    for &(t, v) in &samples {
        app.append(t, v).unwrap();
    }
    let ours = app.chunk().bytes();
    let prom = super::encode_prometheus(&samples);
    // Header, first timestamp (signed varint) and first value are byte-aligned and equal.
    let t0_len = {
        let mut u = ((samples[0].0 << 1) ^ (samples[0].0 >> 63)) as u64;
        let mut n = 1;
        while u >= 0x80 {
            u >>= 7;
            n += 1;
        }
        n
    };
    let d1 = 2 + t0_len + 8;
    assert_eq!(prom[..d1], ours[1..d1 + 1]);
    // Δ1 = 15001: two bytes as Prometheus' uvarint, three as our zig-zag varint (30002).
    assert_eq!(prom[d1..d1 + 2], [0x99, 0x75]);
    assert_eq!(ours[d1 + 1..d1 + 4], [0xb2, 0xea, 0x01]);
    assert_eq!(prom[d1 + 2..], ours[d1 + 4..]);
    // A single sample is exactly our chunk without its encoding byte.
    assert_eq!(super::encode_prometheus(&samples[..1]), {
        let mut a = XorAppender::new();
        a.append(samples[0].0, samples[0].1).unwrap();
        a.chunk().bytes()[1..].to_vec()
    });
}
