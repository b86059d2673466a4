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
/// Flag on the decimal modes: the deltas share a factor (varint after the exponent) and are
/// stored divided by it (memory and disk sizes move in pages: deltas of 4096·k).
const FLAG_FACTOR: u8 = 4;
/// Flag on the decimal modes: after the first mantissa, a bitmap of which of the other
/// `n - 1` deltas (or delta-of-deltas) are non-zero, then only the non-zero ones (idle
/// counters and gauges that change now and then are mostly zeros).
const FLAG_MASK: u8 = 8;
/// Flag on the decimal modes: the values after the first mantissa (after the bitmap, if
/// any) are bit-packed in blocks ([`super::pack`]) instead of varints.
const FLAG_PACK: u8 = 16;
/// Flag on the decimal modes: every mantissa equals the first (a constant series, except
/// for its exceptions); nothing follows the first mantissa.
const FLAG_CONST: u8 = 32;
/// Flag with [`FLAG_MASK`]: the bitmap is written as Rice-coded gaps between its set bits
/// ([`super::pack::put_gaps`]), for sparse ones.
const FLAG_GAPS: u8 = 64;

/// Byte after `raw_len` saying the body follows as is (a zstd frame starts with its magic
/// `28 B5 2F FD` instead): bit-packed bodies do not compress, and a frame costs ~10 bytes.
const STORED: u8 = 0;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

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

/// The varint at `buf[*pos..]`, moving `pos` past it: one- and two-byte varints (most of
/// a chunk's) inline, longer ones by the general reader.
#[inline(always)]
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    match (buf.get(*pos), buf.get(*pos + 1)) {
        (Some(&b), _) if b < 0x80 => {
            *pos += 1;
            Some(u64::from(b))
        }
        (Some(&b0), Some(&b1)) if b1 < 0x80 => {
            *pos += 2;
            Some(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
        }
        _ => {
            let (v, len) = get_varint64(buf.get(*pos..).unwrap_or_default())?;
            *pos += len;
            Some(v)
        }
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
        let x = unzz(read_varint(buf, &mut pos).ok_or_else(truncated)?);
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
    let mut out = Vec::with_capacity(samples.len() + 16);
    out.push(Encoding::Decimal as u8);
    put_varint64(&mut out, samples.len() as u64);
    put_smallest_frame(&mut out, encode_body(samples, true), level)?;
    Ok(out)
}

/// Encodes samples whose timestamps are stored once for many series, in the timestamp
/// column `column` of the same partition ([`encode_column`]): the chunk holds values only.
pub fn encode_with_column(
    samples: &[(i64, f64)],
    column: ColumnRef,
    level: i32,
) -> Result<Vec<u8>> {
    if samples.len() > MAX_SAMPLES {
        return Err(ChunkError::Full { max: MAX_SAMPLES });
    }
    let mut out = Vec::with_capacity(samples.len() + 24);
    out.push(Encoding::DecimalColumn as u8);
    put_varint64(&mut out, samples.len() as u64);
    put_varint64(&mut out, column.seq);
    put_varint64(&mut out, column.index);
    put_smallest_frame(&mut out, encode_body(samples, false), level)?;
    Ok(out)
}

/// `raw_len` varint, then the zstd frame of `body`.
fn put_frame(out: &mut Vec<u8>, body: &[u8], level: i32) -> Result<()> {
    let packed = compress(body, level)?;
    put_varint64(out, body.len() as u64);
    out.extend_from_slice(&packed);
    Ok(())
}

fn compress(body: &[u8], level: i32) -> Result<Vec<u8>> {
    zstd::bulk::compress(body, level)
        .map_err(|e| ChunkError::corrupt(0, format!("zstd compression failed: {e}")))
}

/// [`put_frame`] of whichever of the candidate bodies ends smallest, compressed or
/// stored: which layout zstd does best on is only known by trying. Candidates marked
/// `false` are stored without trying zstd (bit-packed values: it saves them next to
/// nothing, and a second zstd call per chunk doubled compaction time).
fn put_smallest_frame(out: &mut Vec<u8>, bodies: Vec<(Vec<u8>, bool)>, level: i32) -> Result<()> {
    let mut best: Option<(Vec<u8>, Vec<u8>)> = None;
    for (body, try_zstd) in bodies {
        if !try_zstd && best.as_ref().is_some_and(|(_, p)| p.len() <= body.len()) {
            continue;
        }
        let mut packed = if try_zstd {
            compress(&body, level)?
        } else {
            Vec::new()
        };
        if !try_zstd || packed.len() > body.len() {
            packed.clear();
            packed.push(STORED);
            packed.extend_from_slice(&body);
        }
        if best.as_ref().is_none_or(|(_, p)| packed.len() < p.len()) {
            best = Some((body, packed));
        }
    }
    let (body, packed) = best.unwrap_or_default();
    put_varint64(out, body.len() as u64);
    out.extend_from_slice(&packed);
    Ok(())
}

/// The candidate bodies (one per value layout worth trying): mode, exponent, exceptions,
/// then (if `with_times`) timestamps, then values.
fn encode_body(samples: &[(i64, f64)], with_times: bool) -> Vec<(Vec<u8>, bool)> {
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
            return value_layouts(&ms)
                .into_iter()
                .map(|(mode, factor, vals)| {
                    let mut body = Vec::with_capacity(vals.len() + ts.len() * 2 + 16);
                    body.push(mode);
                    put_varint64(&mut body, zz(i64::from(e)));
                    if mode & FLAG_FACTOR != 0 {
                        put_varint64(&mut body, factor);
                    }
                    put_exceptions(&mut body, &exceptions);
                    if with_times {
                        put_deltas(&mut body, &ts, true);
                    }
                    body.extend_from_slice(&vals);
                    (body, mode & FLAG_PACK == 0)
                })
                .collect();
        }
        _ => {
            body.push(MODE_RAW);
            if with_times {
                put_deltas(&mut body, &ts, true);
            }
            let mut prev = 0u64;
            for &(_, v) in samples {
                body.extend_from_slice(&(v.to_bits() ^ prev).to_le_bytes());
                prev = v.to_bits();
            }
        }
    }
    vec![(body, true)]
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Chooses how mantissas are stored: delta or delta-of-delta, divided by the deltas'
/// common factor, plain or with a zero bitmap, as varints or bit-packed. Returns the
/// smallest raw varint form and the smallest raw packed form (zstd compresses the two
/// differently; the caller keeps the one that ends smaller), each as (mode byte, factor,
/// bytes).
fn value_layouts(ms: &[i64]) -> Vec<(u8, u64, Vec<u8>)> {
    let deltas: Vec<i64> = ms.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    if let (Some(&first), true) = (ms.first(), deltas.iter().all(|&d| d == 0)) {
        let mut out = Vec::new();
        put_varint64(&mut out, zz(first));
        return vec![(MODE_DELTA | FLAG_CONST, 1, out)];
    }
    let g = deltas.iter().fold(0u64, |g, d| gcd(g, d.unsigned_abs()));
    // A factor must divide back exactly within i64.
    let (flag, factor) = if (2..=1 << 62).contains(&g) {
        (FLAG_FACTOR, g)
    } else {
        (0, 1)
    };
    let scaled: Vec<i64> = deltas.iter().map(|d| d / factor as i64).collect();
    let dods: Vec<i64> = std::iter::once(scaled.first().copied().unwrap_or(0))
        .chain(scaled.windows(2).map(|w| w[1].wrapping_sub(w[0])))
        .collect();
    let mut best = Vec::new();
    for pack in [false, true] {
        let mut best_here: Option<(u8, Vec<u8>)> = None;
        for (mode, rest) in [(MODE_DELTA, &scaled), (MODE_DOD, &dods)] {
            // No bitmap, a bitmap (if there are zeros), or the bitmap as gaps (if mostly
            // zeros: else the bitmap is as small).
            let zeros = rest.iter().filter(|&&x| x == 0).count();
            for mask in [0, FLAG_MASK, FLAG_MASK | FLAG_GAPS] {
                if (mask != 0 && zeros == 0) || (mask & FLAG_GAPS != 0 && zeros * 2 < rest.len()) {
                    continue;
                }
                let mut out = Vec::with_capacity(ms.len() * 2);
                if let Some(&first) = ms.first() {
                    put_varint64(&mut out, zz(first));
                }
                let nonzero: Vec<i64>;
                let vals: &[i64] = if mask == FLAG_MASK {
                    let mut bits = vec![0u8; rest.len().div_ceil(8)];
                    for (i, &x) in rest.iter().enumerate() {
                        if x != 0 {
                            bits[i / 8] |= 1 << (i % 8);
                        }
                    }
                    out.extend_from_slice(&bits);
                    nonzero = rest.iter().copied().filter(|&x| x != 0).collect();
                    &nonzero
                } else if mask != 0 {
                    let set: Vec<usize> = (0..rest.len()).filter(|&i| rest[i] != 0).collect();
                    super::pack::put_gaps(&mut out, &set);
                    nonzero = rest.iter().copied().filter(|&x| x != 0).collect();
                    &nonzero
                } else {
                    rest
                };
                if pack {
                    super::pack::put_packed(&mut out, vals);
                } else {
                    for &x in vals {
                        put_varint64(&mut out, zz(x));
                    }
                }
                let mode = mode | flag | mask | if pack { FLAG_PACK } else { 0 };
                if best_here.as_ref().is_none_or(|(_, b)| out.len() < b.len()) {
                    best_here = Some((mode, out));
                }
            }
        }
        if let Some((mode, out)) = best_here {
            best.push((mode, factor, out));
        }
    }
    best
}

/// Reads the first `upto` of [`value_layouts`]' `n` mantissas back, handing each to `sink`
/// with its index (as [`get_deltas`]: no vector of its own).
#[allow(clippy::too_many_arguments)]
fn get_values(
    d: &mut Decoder<'_>,
    n: usize,
    upto: usize,
    mode: u8,
    factor: u64,
    at: usize,
    mut sink: impl FnMut(usize, i64),
) -> Result<()> {
    let corrupt = |r: &str| ChunkError::corrupt(at, r.to_string());
    let upto = upto.min(n);
    if upto == 0 {
        return Ok(());
    }
    let first = unzz(
        d.varint64()
            .ok_or_else(|| corrupt("truncated first value"))?,
    );
    sink(0, first);
    if mode & FLAG_CONST != 0 {
        if mode != FLAG_CONST {
            return Err(corrupt("constant values with other flags"));
        }
        (1..upto).for_each(|i| sink(i, first));
        return Ok(());
    }
    let gaps_bitmap;
    let mask = if mode & FLAG_GAPS != 0 {
        if mode & FLAG_MASK == 0 {
            return Err(corrupt("zero gaps without the bitmap flag"));
        }
        let rest = d.clone().bytes(d.remaining()).unwrap_or_default();
        let (bitmap, used) = super::pack::get_gaps(rest, n - 1, at)?;
        d.bytes(used)
            .ok_or_else(|| corrupt("truncated zero gaps"))?;
        gaps_bitmap = bitmap;
        Some(&gaps_bitmap[..])
    } else if mode & FLAG_MASK != 0 {
        Some(
            d.bytes((n - 1).div_ceil(8))
                .ok_or_else(|| corrupt("truncated zero bitmap"))?,
        )
    } else {
        None
    };
    let dod = mode & MODE_DOD != 0;
    // The rest of the body, read with the inlined varint reader or the unpacker; `d`
    // moves past what was read at the end.
    let buf = d.clone().bytes(d.remaining()).unwrap_or_default();
    let mut unpacker = if mode & FLAG_PACK != 0 {
        let total = match mask {
            Some(bits) => {
                let whole = (n - 1) / 8;
                let tail = bits
                    .get(whole)
                    .map_or(0, |b| b & ((1u16 << ((n - 1) % 8)) - 1) as u8);
                bits[..whole]
                    .iter()
                    .map(|b| b.count_ones() as usize)
                    .sum::<usize>()
                    + tail.count_ones() as usize
            }
            None => n - 1,
        };
        Some(super::pack::Unpacker::new(buf, total, at))
    } else {
        None
    };
    let mut pos = 0;
    let mut m = first;
    let mut delta = 0i64;
    for i in 0..upto - 1 {
        let x = match mask {
            Some(bits) if bits[i / 8] & (1 << (i % 8)) == 0 => 0,
            _ => {
                let x = match unpacker.as_mut() {
                    Some(u) => u.next_value()?,
                    None => unzz(
                        read_varint(buf, &mut pos).ok_or_else(|| corrupt("truncated values"))?,
                    ),
                };
                if mask.is_some() && x == 0 {
                    return Err(corrupt("a zero marked non-zero"));
                }
                x
            }
        };
        delta = if dod { delta.wrapping_add(x) } else { x };
        m = m.wrapping_add(delta.wrapping_mul(factor as i64));
        sink(i + 1, m);
    }
    if let Some(u) = &unpacker {
        if upto == n && !u.finished() {
            return Err(corrupt("packed values left over"));
        }
        pos = u.position();
    }
    d.bytes(pos).ok_or_else(|| corrupt("truncated values"))?;
    Ok(())
}

/// Where a [`Encoding::DecimalColumn`] chunk's timestamps are: the column key
/// `'P' part 't' u64be(seq) u64be(index)` of its own partition (docs/format/tsdb-keys.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnRef {
    /// The sequence of the compaction that wrote the column.
    pub seq: u64,
    /// The column's number within that compaction.
    pub index: u64,
}

/// Version byte of a timestamp column value.
pub const COLUMN_V1: u8 = 1;

/// Encodes a timestamp column: `0x01`, count varint, `raw_len` varint, zstd frame of the
/// zig-zag delta-of-delta varints.
pub fn encode_column(ts: &[i64], level: i32) -> Result<Vec<u8>> {
    if ts.len() > MAX_SAMPLES {
        return Err(ChunkError::Full { max: MAX_SAMPLES });
    }
    let mut body = Vec::with_capacity(ts.len() + 16);
    put_deltas(&mut body, ts, true);
    let mut out = vec![COLUMN_V1];
    put_varint64(&mut out, ts.len() as u64);
    put_frame(&mut out, &body, level)?;
    Ok(out)
}

/// Decodes [`encode_column`]'s bytes.
pub fn decode_column(bytes: &[u8]) -> Result<Vec<i64>> {
    match bytes.first() {
        Some(&COLUMN_V1) => {}
        Some(&b) => {
            return Err(ChunkError::corrupt(
                0,
                format!("unknown column version {b}"),
            ))
        }
        None => return Err(ChunkError::corrupt(0, "empty timestamp column")),
    }
    let mut d = Decoder::new(&bytes[1..]);
    let n = d
        .varint64()
        .ok_or_else(|| ChunkError::corrupt(1, "truncated column length"))?;
    let raw_len = d
        .varint64()
        .ok_or_else(|| ChunkError::corrupt(1, "truncated column body length"))?;
    // Every timestamp takes 1 to 10 varint bytes.
    if n as usize > MAX_SAMPLES || raw_len < n || raw_len > n.saturating_mul(10) {
        return Err(ChunkError::corrupt(
            1,
            format!("implausible column header: {n} timestamps in {raw_len} bytes"),
        ));
    }
    let start = 1 + d.position();
    decompressed(bytes, start, raw_len, |body| {
        let mut d = Decoder::new(body);
        let mut ts = Vec::with_capacity(n as usize);
        get_deltas(&mut d, n as usize, true, start, |_, t| ts.push(t))?;
        if !d.is_empty() {
            return Err(ChunkError::corrupt(start, "trailing bytes in the column"));
        }
        // Readers find a query's samples in a column by binary search.
        if ts.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ChunkError::corrupt(
                start,
                "column timestamps do not increase",
            ));
        }
        Ok(ts)
    })
}

/// The header of a [`Encoding::DecimalColumn`] chunk: samples, column, body length, and
/// where the frame starts.
fn column_header(bytes: &[u8]) -> Result<(u64, ColumnRef, u64, usize)> {
    if bytes.first() != Some(&(Encoding::DecimalColumn as u8)) {
        return Err(ChunkError::corrupt(0, "not a decimal-column chunk"));
    }
    let mut d = Decoder::new(&bytes[1..]);
    let bad = || ChunkError::corrupt(1, "truncated chunk header");
    let n = d.varint64().ok_or_else(bad)?;
    let seq = d.varint64().ok_or_else(bad)?;
    let index = d.varint64().ok_or_else(bad)?;
    let raw_len = d.varint64().ok_or_else(bad)?;
    Ok((n, ColumnRef { seq, index }, raw_len, 1 + d.position()))
}

/// The column a [`Encoding::DecimalColumn`] chunk reads its timestamps from.
pub fn column_of(bytes: &[u8]) -> Result<ColumnRef> {
    column_header(bytes).map(|h| h.1)
}

/// Decodes a [`Encoding::DecimalColumn`] chunk with its column's timestamps `ts`.
pub fn decode_with_column(bytes: &[u8], ts: &[i64]) -> Result<Vec<(i64, f64)>> {
    decode_with_column_range(bytes, ts, 0..ts.len())
}

/// Decodes the samples `keep` (indices into the column `ts`) of a
/// [`Encoding::DecimalColumn`] chunk. Values are delta coded, so those before `keep` are
/// decoded too, but none after it (then the rest of the body is not checked either).
pub fn decode_with_column_range(
    bytes: &[u8],
    ts: &[i64],
    keep: std::ops::Range<usize>,
) -> Result<Vec<(i64, f64)>> {
    let (n, _, raw_len, start) = column_header(bytes)?;
    if n != ts.len() as u64 {
        return Err(ChunkError::corrupt(
            1,
            format!("{n} samples but a column of {} timestamps", ts.len()),
        ));
    }
    // Without timestamps a run of equal values takes a bit per sample; `n` itself is
    // bounded by the column, which was decoded from real bytes.
    if raw_len == 0 || raw_len > n.saturating_mul(30) + 32 {
        return Err(ChunkError::corrupt(
            1,
            format!("implausible header: {n} samples in {raw_len} bytes"),
        ));
    }
    decompressed(bytes, start, raw_len, |body| {
        decode_body(body, n as usize, Some((ts, keep)), start)
    })
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
    if bytes.first() == Some(&(Encoding::DecimalColumn as u8)) {
        return Err(ChunkError::corrupt(
            0,
            "a decimal-column chunk needs its timestamp column",
        ));
    }
    let mut d = Decoder::new(bytes.get(1..).unwrap_or_default());
    let n = d
        .varint64()
        .ok_or_else(|| ChunkError::corrupt(1, "truncated sample count"))?;
    let raw_len = d
        .varint64()
        .ok_or_else(|| ChunkError::corrupt(1, "truncated body length"))?;
    // A sample costs at least 1 body byte (its timestamp) and at most 30 (two 10-byte
    // varints + bits + exception): bound what the decompressor may allocate by the
    // header's claims.
    if n as usize > MAX_SAMPLES || raw_len < n || raw_len > n * 30 + 32 {
        return Err(ChunkError::corrupt(
            1,
            format!("implausible header: {n} samples in {raw_len} bytes"),
        ));
    }
    let start = 1 + d.position();
    decompressed(bytes, start, raw_len, |body| {
        decode_body(body, n as usize, None, start)
    })
}

/// Decompresses the frame at `bytes[start..]` (or takes the stored body there), which
/// must give exactly `raw_len` bytes, and hands the body to `f`.
fn decompressed<T>(
    bytes: &[u8],
    start: usize,
    raw_len: u64,
    f: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<T> {
    let rest = bytes.get(start..).unwrap_or_default();
    if rest.first() == Some(&STORED) {
        if rest.len() as u64 - 1 != raw_len {
            return Err(ChunkError::corrupt(
                start,
                "stored body length differs from the header",
            ));
        }
        return f(&rest[1..]);
    }
    if !rest.starts_with(&ZSTD_MAGIC) {
        return Err(ChunkError::corrupt(
            start,
            "neither a zstd frame nor a stored body",
        ));
    }
    with_decompressed(
        bytes.get(start..).unwrap_or_default(),
        raw_len as usize,
        |body| {
            if body.len() as u64 != raw_len {
                return Err(ChunkError::corrupt(
                    start,
                    "body length differs from the header",
                ));
            }
            f(body)
        },
        start,
    )
}

/// Decodes the decompressed body of a chunk of `n` samples; `times` given means the body
/// holds none (they are in a column of `n`), and only the samples of its index range are
/// wanted: values are read up to its end, the rest of the body is left unread.
fn decode_body(
    body: &[u8],
    n: usize,
    times: Option<(&[i64], std::ops::Range<usize>)>,
    at: usize,
) -> Result<Vec<(i64, f64)>> {
    let mut d = Decoder::new(body);
    let mode = d
        .u8()
        .ok_or_else(|| ChunkError::corrupt(at, "empty body"))?;
    // Samples `from..upto` are returned; timestamps in the body are all read.
    let (from, upto) = match &times {
        Some((_, keep)) => {
            let upto = keep.end.min(n);
            (keep.start.min(upto), upto)
        }
        None => (0, n),
    };
    let mut out = Vec::with_capacity(upto - from);
    let read_times = |d: &mut Decoder<'_>, out: &mut Vec<(i64, f64)>| -> Result<()> {
        match &times {
            Some((ts, _)) => {
                let ts = ts.get(from..upto).unwrap_or_default();
                out.extend(ts.iter().map(|&t| (t, 0.0)));
                Ok(())
            }
            None => get_deltas(d, n, true, at, |_, t| out.push((t, 0.0))),
        }
    };
    match mode {
        _ if mode & !(MODE_DOD | FLAG_FACTOR | FLAG_MASK | FLAG_PACK | FLAG_CONST | FLAG_GAPS)
            == 0 =>
        {
            let e = d
                .varint64()
                .map(unzz)
                .filter(|e| (-15..=15).contains(e))
                .ok_or_else(|| ChunkError::corrupt(at, "bad exponent"))? as i32;
            let factor = if mode & FLAG_FACTOR != 0 {
                d.varint64()
                    .filter(|g| (2..=1 << 62).contains(g))
                    .ok_or_else(|| ChunkError::corrupt(at, "bad factor"))?
            } else {
                1
            };
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
            read_times(&mut d, &mut out)?;
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
            // Called for every index in order (exceptions are consumed in order); writes
            // those from `from` on.
            let put = |i: usize, m: i64| {
                let v = match exi.peek() {
                    Some((j, bits)) if *j == i => {
                        exi.next();
                        f64::from_bits(*bits)
                    }
                    _ => from_decimal(m, e),
                };
                if let Some(smp) = i.checked_sub(from).and_then(|k| out.get_mut(k)) {
                    smp.1 = v;
                }
            };
            if mode & (FLAG_FACTOR | FLAG_MASK | FLAG_PACK | FLAG_CONST | FLAG_GAPS) == 0 {
                get_deltas(&mut d, upto, mode == MODE_DOD, at, put)?;
            } else {
                get_values(&mut d, n, upto, mode, factor, at, put)?;
            }
        }
        MODE_RAW => {
            read_times(&mut d, &mut out)?;
            let mut prev = 0u64;
            for i in 0..upto {
                let x = d
                    .fixed64()
                    .ok_or_else(|| ChunkError::corrupt(at, "truncated raw values"))?;
                prev ^= x;
                if let Some(smp) = i.checked_sub(from).and_then(|k| out.get_mut(k)) {
                    smp.1 = f64::from_bits(prev);
                }
            }
        }
        m => return Err(ChunkError::corrupt(at, format!("unknown value mode {m}"))),
    }
    if upto == n && !d.is_empty() {
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
        // Every candidate layout, not only the one the encoder keeps, stored and in a
        // zstd frame.
        for (body, _) in encode_body(samples, true) {
            for stored in [true, false] {
                let mut enc = vec![Encoding::Decimal as u8];
                put_varint64(&mut enc, samples.len() as u64);
                if stored {
                    put_varint64(&mut enc, body.len() as u64);
                    enc.push(STORED);
                    enc.extend_from_slice(&body);
                } else {
                    put_frame(&mut enc, &body, 1).unwrap();
                }
                let dec = decode(&enc).unwrap();
                assert_eq!(dec.len(), samples.len(), "mode {}", body[0]);
                for (a, b) in dec.iter().zip(samples) {
                    assert_eq!(
                        (a.0, a.1.to_bits()),
                        (b.0, b.1.to_bits()),
                        "mode {}",
                        body[0]
                    );
                }
            }
        }
        let enc = encode(samples, 3).unwrap();
        let dec = decode(&enc).unwrap();
        assert_eq!(dec.len(), samples.len());
        for (a, b) in dec.iter().zip(samples) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
        // The same samples with their timestamps in a column.
        let col = ColumnRef { seq: 7, index: 300 };
        let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
        let column = encode_column(&ts, 3).unwrap();
        if ts.windows(2).all(|w| w[0] < w[1]) {
            assert_eq!(decode_column(&column).unwrap(), ts);
        } else {
            assert!(decode_column(&column).is_err(), "a column must increase");
        }
        let enc = encode_with_column(samples, col, 3).unwrap();
        assert_eq!(column_of(&enc).unwrap(), col);
        assert_eq!(num_samples(&enc).unwrap(), samples.len());
        assert!(decode(&enc).is_err(), "needs its column");
        let dec = decode_with_column(&enc, &ts).unwrap();
        for (a, b) in dec.iter().zip(samples) {
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
        }
        if !ts.is_empty() {
            assert!(
                decode_with_column(&enc, &ts[1..]).is_err(),
                "a column of another length"
            );
        }
        // Every sub-range decodes to the same samples as the whole.
        let n = samples.len();
        for lo in [0, 1, n / 3, n / 2, n.saturating_sub(1), n] {
            for hi in [lo, lo + 1, (lo + n) / 2, n.saturating_sub(1), n, n + 5] {
                if lo > hi || lo > n {
                    continue;
                }
                let part = decode_with_column_range(&enc, &ts, lo..hi).unwrap();
                let want = &dec[lo..hi.min(n)];
                assert_eq!(part.len(), want.len(), "{lo}..{hi} of {n}");
                for (a, b) in part.iter().zip(want) {
                    assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "{lo}..{hi}");
                }
            }
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
        // Constant values around stale markers and specials (FLAG_CONST with exceptions).
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        round_trip(&[(1, 5.0), (2, stale), (3, 5.0), (4, -0.0), (5, 5.0)]);
        round_trip(&[(1, f64::NEG_INFINITY), (2, 7.5), (3, 7.5)]);
        round_trip(&(0..1000).map(|i| (i * 15_000, 1.6e9)).collect::<Vec<_>>());
        // Steady counters with bursts (packed with exceptions), huge and tiny exponents.
        let mut v = 1u64 << 40;
        let burst: Vec<(i64, f64)> = (0..900)
            .map(|i| {
                v += 150_000 + (i * 7919 % 100_000) + if i % 50 == 7 { 40_000_000 } else { 0 };
                (i as i64 * 15_000, v as f64)
            })
            .collect();
        round_trip(&burst);
        round_trip(&[(0, 1e-15), (1, 2e-15), (2, 3e-15), (3, 1e15), (4, -1e15)]);
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
    fn page_sized_steps_use_a_factor_and_a_zero_bitmap() {
        let mut v = 8_000_000_000.0f64;
        let samples: Vec<(i64, f64)> = (0..720)
            .map(|i| {
                if i % 3 == 0 {
                    v += ((i * 37 % 2001) as f64 - 1000.0) * 4096.0;
                }
                (i * 15_000, v)
            })
            .collect();
        let ms: Vec<i64> = samples.iter().map(|s| s.1 as i64).collect();
        for (mode, factor, _) in value_layouts(&ms) {
            assert_eq!(factor, 4096);
            assert_eq!(mode & (FLAG_FACTOR | FLAG_MASK), FLAG_FACTOR | FLAG_MASK);
        }
        round_trip(&samples);
    }

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Chunks of the first decimal encoder (zstd frames, modes without FLAG_PACK or
    /// FLAG_CONST) still decode to what that build read, and the new encoder writes them
    /// smaller.
    #[test]
    fn chunks_of_the_first_encoder_still_decode() {
        let fixture = include_str!("testdata/decimal-v1.txt");
        let mut ts = Vec::new();
        let mut chunks = 0;
        for line in fixture.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "column" => ts = decode_column(&unhex(f[1])).unwrap(),
                _ => {
                    let bytes = unhex(f[4]);
                    let samples = decode_with_column(&bytes, &ts).unwrap();
                    assert_eq!(samples.len(), f[2].parse::<usize>().unwrap());
                    let mut h = 0xcbf2_9ce4_8422_2325u64;
                    for &(t, v) in &samples {
                        for x in [t as u64, v.to_bits()] {
                            h = (h ^ x).wrapping_mul(0x100_0000_01b3);
                        }
                    }
                    assert_eq!(format!("{h:016x}"), f[3], "chunk of ref {}", f[1]);
                    let col = column_of(&bytes).unwrap();
                    let again = encode_with_column(&samples, col, 13).unwrap();
                    assert!(again.len() <= bytes.len(), "ref {}", f[1]);
                    assert_eq!(decode_with_column(&again, &ts).unwrap(), samples);
                    chunks += 1;
                }
            }
        }
        assert_eq!(chunks, 4);
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
        fn sparse_and_factored_values_round_trip(
            steps in proptest::collection::vec((0u8..10, -3000i64..3000, 0u8..4), 1..400),
            start in any::<i32>(),
            factor in prop_oneof![Just(1i64), Just(4096), Just(60), Just(1 << 40)],
        ) {
            // Gauges that move now and then by multiples of a factor, with the odd
            // special value and the odd huge jump.
            let mut v = i64::from(start);
            let samples: Vec<(i64, f64)> = steps
                .iter()
                .enumerate()
                .map(|(i, &(p, k, special))| {
                    if p < 3 {
                        v = v.wrapping_add(k.wrapping_mul(factor));
                    }
                    if p == 9 && special == 0 {
                        v = v.wrapping_mul(1 << 20);
                    }
                    let x = if p == 8 && special == 1 { f64::NAN } else { v as f64 / 100.0 };
                    (i as i64 * 15_000, x)
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
            if let Some(b) = bytes.first_mut() {
                *b = 3;
            }
            if column_of(&bytes).is_ok() {
                let n = num_samples(&bytes).unwrap_or(0).min(1000);
                let ts: Vec<i64> = (0..n as i64).collect();
                let _ = decode_with_column(&bytes, &ts);
            }
            if let Some(b) = bytes.first_mut() {
                *b = COLUMN_V1;
            }
            let _ = decode_column(&bytes);
        }
    }
}

/// Where the bytes go, on real data: a dump of `strata inspect chunks DIR --match
/// '{__name__=~".+"}' --samples` (path in `TB_DUMP`) re-encoded series by series, bytes per
/// sample by metric (cpu modes, network devices and histogram buckets apart) and each
/// candidate layout's raw and compressed size for one series of each; with `TB_DECODE`,
/// decoding of old against new layouts for `callgrind --toggle-collect='*decode_all*'`.
/// `TB_DUMP=... cargo test --release -p strata-tsdb --lib dump_sizes -- --ignored --nocapture`
#[cfg(test)]
mod dump_experiment {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    #[ignore]
    fn dump_sizes() {
        let Ok(path) = std::env::var("TB_DUMP") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let mut series: Vec<(String, Vec<(i64, f64)>)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("  ") {
                let mut it = rest.split(' ');
                let t: i64 = it.next().unwrap().parse().unwrap();
                let v: f64 = it.next().unwrap().parse().unwrap();
                series.last_mut().unwrap().1.push((t, v));
            } else if let Some(name) = line.strip_prefix("{__name__=\"") {
                let name = name.split('"').next().unwrap().to_string();
                let name = if name.contains("bucket") {
                    let le = line
                        .split("le=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap();
                    format!("{name}{{le={le}}}")
                } else if name.contains("network") {
                    let m = line
                        .split("device=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap();
                    format!("{name}{{device={m}}}")
                } else if name.contains("cpu_seconds") {
                    let m = line
                        .split("mode=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap();
                    format!("{name}{{mode={m}}}")
                } else {
                    name
                };
                series.push((name, Vec::new()));
            }
        }
        if std::env::var("TB_DECODE").is_ok() {
            // Decode cost, old layouts (varints, zstd frame) against the new encoder's
            // choice: callgrind --toggle-collect='*decode_all*'.
            let ts: Vec<i64> = series[0].1.iter().map(|s| s.0).collect();
            let same: Vec<&Vec<(i64, f64)>> = series
                .iter()
                .map(|s| &s.1)
                .filter(|s| s.len() == ts.len())
                .filter(|s| s.iter().any(|x| x.1.to_bits() != s[0].1.to_bits()))
                .collect();
            type Pairs<'a> = (Vec<Vec<u8>>, Vec<&'a Vec<(i64, f64)>>);
            let (old, same): Pairs<'_> = same
                .iter()
                .filter_map(|s| {
                    let (body, _) = encode_body(s, false)
                        .into_iter()
                        .find(|(b, _)| b[0] & (FLAG_PACK | FLAG_GAPS | FLAG_CONST) == 0)?;
                    let mut enc = vec![Encoding::DecimalColumn as u8];
                    put_varint64(&mut enc, s.len() as u64);
                    put_varint64(&mut enc, 1);
                    put_varint64(&mut enc, 1);
                    put_frame(&mut enc, &body, 9).unwrap();
                    Some((enc, *s))
                })
                .unzip();
            let new: Vec<Vec<u8>> = same
                .iter()
                .map(|s| encode_with_column(s, ColumnRef { seq: 1, index: 1 }, 11).unwrap())
                .collect();
            #[inline(never)]
            fn decode_all_old(chunks: &[Vec<u8>], ts: &[i64]) -> usize {
                chunks
                    .iter()
                    .map(|c| decode_with_column(c, ts).unwrap().len())
                    .sum()
            }
            #[inline(never)]
            fn decode_all_new(chunks: &[Vec<u8>], ts: &[i64]) -> usize {
                chunks
                    .iter()
                    .map(|c| decode_with_column(c, ts).unwrap().len())
                    .sum()
            }
            let n = decode_all_old(&old, &ts) + decode_all_new(&new, &ts);
            let sz = |v: &[Vec<u8>]| v.iter().map(|c| c.len()).sum::<usize>();
            println!(
                "decoded {n} samples; old {} bytes, new {}",
                sz(&old),
                sz(&new)
            );
            return;
        }
        let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let (mut tb, mut ts) = (0, 0);
        // The level compaction uses unless `TB_LEVEL` says otherwise.
        let level: i32 = std::env::var("TB_LEVEL").map_or(11, |l| l.parse().unwrap());
        let t0 = std::time::Instant::now();
        for _ in 1..std::env::var("TB_REPS").map_or(1, |l| l.parse().unwrap()) {
            for (_, s) in &series {
                encode_with_column(s, ColumnRef { seq: 1, index: 1 }, level).unwrap();
            }
        }
        for (name, s) in &series {
            let enc = encode_with_column(s, ColumnRef { seq: 1, index: 1 }, level).unwrap();
            let e = by.entry(name.clone()).or_default();
            e.0 += enc.len();
            e.1 += s.len();
            tb += enc.len();
            ts += s.len();
        }
        let el = t0.elapsed();
        let mut seen = std::collections::HashSet::new();
        for (name, s) in &series {
            if !seen.insert(name.clone()) {
                continue;
            }
            for (body, _) in encode_body(s, false) {
                let z = compress(&body, level).unwrap().len();
                let mode = body[0];
                println!("  {name:50} mode {mode:2} raw {:5} zstd {z:5}", body.len());
            }
        }
        for (k, (b, n)) in &by {
            println!("{k:60} {:.3}", *b as f64 / *n as f64);
        }
        println!("total {:.4} B/sample in {el:?}", tb as f64 / ts as f64);
    }
}
