//! The compacted chunk encoding: decimal conversion, delta coding and zstd.
//!
//! Gorilla's XOR coding works well for values that repeat or change in their low mantissa
//! bits, but a value with a few decimals (`12.34`) has a binary fraction that never ends,
//! so every change costs most of 64 bits. Most monitoring values are decimals at heart
//! (counters of bytes, seconds with 0.01 resolution, gauges with two decimals), as
//! VictoriaMetrics observed. This encoding, used when a partition is compacted (whole
//! partitions of a series in one chunk):
//!
//! 1. converts every value to an integer mantissa `m` with one shared decimal exponent
//!    `e` such that `m / 10^e` gives back the exact same bits; values that do not convert
//!    (NaN, stale markers, infinities, `-0.0`, more than 15 significant digits) are kept
//!    as exceptions, bit-exact;
//! 2. codes timestamps as delta-of-delta and mantissas as delta or delta-of-delta
//!    (whichever is smaller), zig-zag varints; if no exponent works, raw value bits;
//! 3. compresses that with zstd.
//!
//! Layout (docs/format/chunk.md): `0x02`, `num_samples` varint, `raw_len` varint, then the
//! zstd frame of the body. Body: `mode` byte (0 decimal-delta, 1 decimal-delta-of-delta,
//! 2 raw bits), exponent (zig-zag varint, decimal modes), exception count and
//! `(index, bits)` pairs, timestamps, values.

use strata_kv::coding::{get_varint64, put_varint64, Decoder};

use super::{ChunkError, Encoding, Result};

/// The largest number of samples a decimal chunk holds.
pub const MAX_SAMPLES: usize = 1 << 24;

const MODE_DELTA: u8 = 0;
const MODE_DOD: u8 = 1;
const MODE_RAW: u8 = 2;

/// Mantissas stay below 2^53 so that `m as f64` is exact.
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzz(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn pow10(e: i32) -> f64 {
    10f64.powi(e)
}

/// The value `m / 10^e` (or `m * 10^-e`), computed the same way when encoding and decoding.
fn from_decimal(m: i64, e: i32) -> f64 {
    if e >= 0 {
        m as f64 / pow10(e)
    } else {
        m as f64 * pow10(-e)
    }
}

/// The mantissa of `v` at exponent `e`, if it gives back `v` exactly.
fn to_decimal(v: f64, e: i32) -> Option<i64> {
    let scaled = if e >= 0 { v * pow10(e) } else { v / pow10(-e) };
    let m = scaled.round();
    if !m.is_finite() || m.abs() >= MAX_MANTISSA {
        return None;
    }
    let m = m as i64;
    (from_decimal(m, e).to_bits() == v.to_bits()).then_some(m)
}

/// The smallest exponent in `0..=15` at which `v` converts exactly.
fn min_exponent(v: f64) -> Option<i32> {
    (0..=15).find(|&e| to_decimal(v, e).is_some())
}

fn put_deltas(out: &mut Vec<u8>, vals: &[i64], dod: bool) {
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for (i, &v) in vals.iter().enumerate() {
        if i == 0 {
            put_varint64(out, zz(v));
        } else {
            let delta = v.wrapping_sub(prev);
            if dod && i > 1 {
                put_varint64(out, zz(delta.wrapping_sub(prev_delta)));
            } else {
                put_varint64(out, zz(delta));
            }
            prev_delta = delta;
        }
        prev = v;
    }
}

/// Reads `n` delta (or delta-of-delta) coded integers, handing each to `sink` with its
/// index (no vector of its own: the caller writes them where they belong).
fn get_deltas(
    d: &mut Decoder<'_>,
    n: usize,
    dod: bool,
    at: usize,
    mut sink: impl FnMut(usize, i64),
) -> Result<()> {
    let truncated = || ChunkError::corrupt(at, "truncated delta stream");
    // The rest of the body, read with an inlined varint reader; `d` moves past what was
    // read at the end.
    let buf = d.clone().bytes(d.remaining()).unwrap_or_default();
    let mut pos = 0;
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for i in 0..n {
        let raw = match (buf.get(pos), buf.get(pos + 1)) {
            (Some(&b), _) if b < 0x80 => {
                pos += 1;
                u64::from(b)
            }
            (Some(&b0), Some(&b1)) if b1 < 0x80 => {
                pos += 2;
                u64::from(b0 & 0x7f) | u64::from(b1) << 7
            }
            _ => {
                let (v, len) =
                    get_varint64(buf.get(pos..).unwrap_or_default()).ok_or_else(truncated)?;
                pos += len;
                v
            }
        };
        let x = unzz(raw);
        let v = if i == 0 {
            x
        } else {
            let delta = if dod && i > 1 {
                prev_delta.wrapping_add(x)
            } else {
                x
            };
            prev_delta = delta;
            prev.wrapping_add(delta)
        };
        sink(i, v);
        prev = v;
    }
    d.bytes(pos).ok_or_else(truncated)?;
    Ok(())
}

/// Encodes samples (any order is kept as given) with zstd at `level`.
pub fn encode(samples: &[(i64, f64)], level: i32) -> Result<Vec<u8>> {
    if samples.len() > MAX_SAMPLES {
        return Err(ChunkError::Full { max: MAX_SAMPLES });
    }
    let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
    // One exponent for the chunk: the largest any regular value needs.
    let mut exp = Some(0i32);
    let mut exceptions: Vec<(usize, u64)> = Vec::new();
    for (i, &(_, v)) in samples.iter().enumerate() {
        if !v.is_finite() || v.to_bits() == (-0.0f64).to_bits() {
            exceptions.push((i, v.to_bits()));
            continue;
        }
        match (exp, min_exponent(v)) {
            (Some(e), Some(ve)) => exp = Some(e.max(ve)),
            _ => exp = None,
        }
    }
    let mut body = Vec::with_capacity(samples.len() * 3 + 16);
    let mantissas: Option<Vec<i64>> = exp.and_then(|e| {
        let mut prev = 0i64;
        let mut ex = exceptions.iter().peekable();
        samples
            .iter()
            .enumerate()
            .map(|(i, &(_, v))| {
                if ex.peek().is_some_and(|(j, _)| *j == i) {
                    ex.next();
                    return Some(prev); // exceptions repeat the previous mantissa
                }
                let m = to_decimal(v, e)?;
                prev = m;
                Some(m)
            })
            .collect()
    });
    match (exp, mantissas) {
        (Some(e), Some(ms)) => {
            let mut a = Vec::new();
            put_deltas(&mut a, &ms, false);
            let mut b = Vec::new();
            put_deltas(&mut b, &ms, true);
            let (mode, vals) = if b.len() < a.len() {
                (MODE_DOD, b)
            } else {
                (MODE_DELTA, a)
            };
            body.push(mode);
            put_varint64(&mut body, zz(i64::from(e)));
            put_exceptions(&mut body, &exceptions);
            put_deltas(&mut body, &ts, true);
            body.extend_from_slice(&vals);
        }
        _ => {
            body.push(MODE_RAW);
            put_deltas(&mut body, &ts, true);
            let mut prev = 0u64;
            for &(_, v) in samples {
                body.extend_from_slice(&(v.to_bits() ^ prev).to_le_bytes());
                prev = v.to_bits();
            }
        }
    }
    let packed = zstd::bulk::compress(&body, level)
        .map_err(|e| ChunkError::corrupt(0, format!("zstd compression failed: {e}")))?;
    let mut out = Vec::with_capacity(packed.len() + 12);
    out.push(Encoding::Decimal as u8);
    put_varint64(&mut out, samples.len() as u64);
    put_varint64(&mut out, body.len() as u64);
    out.extend_from_slice(&packed);
    Ok(out)
}

fn put_exceptions(out: &mut Vec<u8>, ex: &[(usize, u64)]) {
    put_varint64(out, ex.len() as u64);
    let mut prev = 0usize;
    for &(i, bits) in ex {
        put_varint64(out, (i - prev) as u64);
        out.extend_from_slice(&bits.to_le_bytes());
        prev = i;
    }
}

/// A zstd decompression context and a body buffer, one per thread.
struct Inflater {
    ctx: zstd::bulk::Decompressor<'static>,
    body: Vec<u8>,
}

/// Body buffers above this size are not kept for the next chunk.
const KEEP_BODY_BYTES: usize = 1 << 20;

thread_local! {
    /// One zstd decompression context per thread, reused: creating one costs more than
    /// decompressing a typical chunk (it probes the CPU's features, a trapping `cpuid` on
    /// virtual machines).
    static INFLATER: std::cell::RefCell<Option<Inflater>> = const { std::cell::RefCell::new(None) };
}

/// Decompresses one zstd frame of at most `capacity` bytes with this thread's context and
/// buffer, and hands the bytes to `f`.
fn with_decompressed<T>(
    frame: &[u8],
    capacity: usize,
    f: impl FnOnce(&[u8]) -> Result<T>,
    at: usize,
) -> Result<T> {
    let zstd_err = |e: std::io::Error| ChunkError::corrupt(at, format!("zstd: {e}"));
    INFLATER.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            // Re-entered (cannot happen today): a context of its own.
            let body = zstd::bulk::decompress(frame, capacity).map_err(zstd_err)?;
            return f(&body);
        };
        if slot.is_none() {
            *slot = Some(Inflater {
                ctx: zstd::bulk::Decompressor::new().map_err(zstd_err)?,
                body: Vec::new(),
            });
        }
        let Some(inf) = slot.as_mut() else {
            return Err(ChunkError::corrupt(at, "no zstd context"));
        };
        inf.body.clear();
        inf.body.reserve(capacity);
        let got = inf
            .ctx
            .decompress_to_buffer(frame, &mut inf.body)
            .map_err(zstd_err)
            .and_then(|_| f(&inf.body));
        if inf.body.capacity() > KEEP_BODY_BYTES {
            inf.body = Vec::new();
        }
        got
    })
}

/// Decodes a whole decimal chunk (`bytes` includes the encoding byte).
pub fn decode(bytes: &[u8]) -> Result<Vec<(i64, f64)>> {
    let mut d = Decoder::new(bytes.get(1..).unwrap_or_default());
    let n = d
        .varint64()
        .ok_or_else(|| ChunkError::corrupt(1, "truncated sample count"))?;
    let raw_len = d
        .varint64()
        .ok_or_else(|| ChunkError::corrupt(1, "truncated body length"))?;
    // A sample costs at least 2 body bytes and at most 30 (two 10-byte varints + bits
    // + exception): bound what the decompressor may allocate by the header's claims.
    if n as usize > MAX_SAMPLES || raw_len < n.saturating_mul(2) || raw_len > n * 30 + 32 {
        return Err(ChunkError::corrupt(
            1,
            format!("implausible header: {n} samples in {raw_len} bytes"),
        ));
    }
    let n = n as usize;
    let start = 1 + d.position();
    with_decompressed(
        &bytes[start..],
        raw_len as usize,
        |body| decode_body(body, n, raw_len as usize, start),
        start,
    )
}

/// Decodes the decompressed body of a chunk of `n` samples.
fn decode_body(body: &[u8], n: usize, raw_len: usize, start: usize) -> Result<Vec<(i64, f64)>> {
    if body.len() != raw_len {
        return Err(ChunkError::corrupt(
            start,
            "body length differs from the header",
        ));
    }
    let at = start;
    let mut d = Decoder::new(body);
    let mode = d
        .u8()
        .ok_or_else(|| ChunkError::corrupt(at, "empty body"))?;
    let mut out = Vec::with_capacity(n);
    match mode {
        MODE_DELTA | MODE_DOD => {
            let e = d
                .varint64()
                .map(unzz)
                .filter(|e| (-15..=15).contains(e))
                .ok_or_else(|| ChunkError::corrupt(at, "bad exponent"))? as i32;
            let nex = d
                .varint64()
                .ok_or_else(|| ChunkError::corrupt(at, "bad exception count"))?;
            if nex > n as u64 {
                return Err(ChunkError::corrupt(at, "more exceptions than samples"));
            }
            let mut ex = Vec::with_capacity(nex as usize);
            let mut idx = 0u64;
            for k in 0..nex {
                let di = d
                    .varint64()
                    .ok_or_else(|| ChunkError::corrupt(at, "truncated exception"))?;
                idx = idx.saturating_add(di);
                if idx >= n as u64 || (k > 0 && di == 0) {
                    return Err(ChunkError::corrupt(at, "exception index out of order"));
                }
                let bits = d
                    .fixed64()
                    .ok_or_else(|| ChunkError::corrupt(at, "truncated exception"))?;
                ex.push((idx as usize, bits));
            }
            get_deltas(&mut d, n, true, at, |_, t| out.push((t, 0.0)))?;
            // `from_decimal` with the power of ten computed once, not once per sample.
            let scale = pow10(e.abs());
            let from_decimal = |m: i64, e: i32| {
                if e >= 0 {
                    m as f64 / scale
                } else {
                    m as f64 * scale
                }
            };
            let mut exi = ex.iter().peekable();
            get_deltas(&mut d, n, mode == MODE_DOD, at, |i, m| {
                out[i].1 = match exi.peek() {
                    Some((j, bits)) if *j == i => {
                        exi.next();
                        f64::from_bits(*bits)
                    }
                    _ => from_decimal(m, e),
                };
            })?;
        }
        MODE_RAW => {
            get_deltas(&mut d, n, true, at, |_, t| out.push((t, 0.0)))?;
            let mut prev = 0u64;
            for smp in out.iter_mut() {
                let x = d
                    .fixed64()
                    .ok_or_else(|| ChunkError::corrupt(at, "truncated raw values"))?;
                prev ^= x;
                smp.1 = f64::from_bits(prev);
            }
        }
        m => return Err(ChunkError::corrupt(at, format!("unknown value mode {m}"))),
    }
    if !d.is_empty() {
        return Err(ChunkError::corrupt(at, "trailing bytes in the body"));
    }
    Ok(out)
}

/// The number of samples a decimal chunk claims (header only).
pub fn num_samples(bytes: &[u8]) -> Result<usize> {
    let mut d = Decoder::new(bytes.get(1..).unwrap_or_default());
    d.varint64()
        .map(|n| n as usize)
        .ok_or_else(|| ChunkError::corrupt(1, "truncated sample count"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(samples: &[(i64, f64)]) {
        let enc = encode(samples, 3).unwrap();
        let dec = decode(&enc).unwrap();
        assert_eq!(dec.len(), samples.len());
        for (a, b) in dec.iter().zip(samples) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
    }

    #[test]
    fn decimals_specials_and_raw_round_trip() {
        round_trip(&[]);
        round_trip(&[(0, 1.25), (15_000, 1.3), (30_000, 1.31), (45_001, 100.0)]);
        round_trip(&[
            (1, 5.5),
            (2, f64::NAN),
            (3, f64::from_bits(0x7ff0_0000_0000_0002)),
            (4, -0.0),
            (5, f64::INFINITY),
            (6, 7.0),
        ]);
        round_trip(&[(1, std::f64::consts::PI), (2, 1e300), (3, 5e-324)]);
        round_trip(&[(i64::MIN, 1e15), (i64::MAX, -1e15), (0, 123456789.123456)]);
    }

    #[test]
    fn counters_compress_far_below_gorilla() {
        let samples: Vec<(i64, f64)> = (0..5760)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 15_000 + (i * 7 % 5),
                    1000.0 + (i * 37 % 1500) as f64 / 100.0 * i as f64 / 10.0,
                )
            })
            .map(|(t, v)| (t, (v * 100.0).round() / 100.0))
            .collect();
        let enc = encode(&samples, 3).unwrap();
        let bps = enc.len() as f64 / samples.len() as f64;
        assert!(bps < 3.0, "{bps} bytes/sample");
        round_trip(&samples);
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &[2u8][..],
            &[2, 5],
            &[2, 5, 10, 1, 2, 3],
            &[2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_reused_decompressor_survives_a_corrupt_frame() {
        let good: Vec<(i64, f64)> = (0..500).map(|i| (i * 15_000, i as f64 * 0.5)).collect();
        let enc = encode(&good, 3).unwrap();
        round_trip(&good);
        // The same header over a damaged frame: an error, and the thread's context
        // decodes the next good chunk as if nothing happened.
        let mut bad = enc.clone();
        let n = bad.len();
        for b in &mut bad[n / 2..] {
            *b ^= 0x5a;
        }
        assert!(decode(&bad).is_err());
        bad.truncate(n - 3);
        assert!(decode(&bad).is_err());
        assert_eq!(decode(&enc).unwrap().len(), 500);
        round_trip(&[(1, 2.0)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xdec1),
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_samples_round_trip_bit_exact(
            samples in proptest::collection::vec((any::<i64>(), any::<u64>(), 0u8..4), 0..300)
        ) {
            let samples: Vec<(i64, f64)> = samples
                .into_iter()
                .map(|(t, bits, kind)| match kind {
                    0 => (t, f64::from_bits(bits)),
                    1 => (t, (bits % 100_000) as f64 / 100.0),
                    2 => (t, (bits % 1000) as f64),
                    _ => (t / 1000, -((bits % 77) as f64) / 10.0),
                })
                .collect();
            round_trip(&samples);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(b) = bytes.first_mut() {
                *b = 2;
            }
            let _ = decode(&bytes);
        }
    }
}
