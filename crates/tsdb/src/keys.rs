//! The key layout of the time-series store in `strata-kv` (docs/format/tsdb-keys.md).
//!
//! Everything of one time partition lives under one key prefix, so a query touches only
//! the partitions of its range and retention drops a partition with one range delete:
//!
//! ```text
//! 'M' name                                   -> meta value (next series ref, WAL mark, ...)
//! 'P' part 'c' ref mint seq                  -> chunk: maxt, then the chunk bytes
//! 'P' part 's' ref                           -> the series' labels (Labels::encode)
//! 'P' part 'x' esc(name) esc(value) seq      -> a postings fragment (sorted refs)
//! 'P' part 'z' seq                           -> a stats fragment of one flush
//! 'P' part 't' seq index                     -> a timestamp column of compacted chunks
//! 'P' part 'b' ref seq                       -> time bounds of the chunks one write added
//! 'P' part 'B'                               -> mark: every chunk has its bounds ('b')
//! ```
//!
//! `part`, `mint` are i64 stored big-endian with the sign bit flipped (so they sort as
//! numbers), `ref` and `seq` are u64 big-endian, `esc` is the escaped, terminated string
//! encoding of [`crate::labels::Labels::encode`] (order-preserving).

use crate::postings::SeriesRef;

/// Prefix of meta keys.
pub const META: u8 = b'M';
/// Prefix of partition keys.
pub const PARTITION: u8 = b'P';
/// Partition sub-key: chunk.
pub const CHUNK: u8 = b'c';
/// Partition sub-key: series labels.
pub const SERIES: u8 = b's';
/// Partition sub-key: postings fragment.
pub const POSTINGS: u8 = b'x';
/// Partition sub-key: stats fragment.
pub const STATS: u8 = b'z';
/// Partition sub-key: timestamp column shared by compacted chunks.
pub const COLUMN: u8 = b't';
/// Partition sub-key: time bounds of the chunks one flush or compaction wrote for a series.
pub const BOUNDS: u8 = b'b';
/// Partition sub-key (the whole key): every chunk of the partition is described by bounds.
pub const BOUNDED: u8 = b'B';

/// Meta key: the next series reference to hand out (u64 LE).
pub const META_NEXT_REF: &[u8] = b"Mnext_ref";
/// Meta key: WAL segments up to this number are persisted (u64 LE).
pub const META_WAL_PERSISTED: &[u8] = b"Mwal_persisted";
/// Meta key: the next flush sequence number (u64 LE).
pub const META_NEXT_SEQ: &[u8] = b"Mnext_seq";
/// Meta key: the largest sample timestamp ever persisted (i64 LE).
pub const META_MAX_TIME: &[u8] = b"Mmax_time";
/// Meta key: the format version of the key layout (u32 LE).
pub const META_FORMAT: &[u8] = b"Mformat";
/// The current key layout version. Version 2 added chunk bounds ('b', 'B'); a version-1
/// store opens as is (its partitions have no 'B' mark) and is marked version 2.
pub const FORMAT_VERSION: u32 = 2;

/// An i64 as 8 bytes that sort like the numbers.
pub fn put_i64(dst: &mut Vec<u8>, v: i64) {
    dst.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

/// Reads [`put_i64`]'s bytes.
pub fn get_i64(src: &[u8]) -> Option<i64> {
    let b: [u8; 8] = src.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// Reads a big-endian u64.
pub fn get_u64(src: &[u8]) -> Option<u64> {
    let b: [u8; 8] = src.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// `'P' part`: the prefix of everything of partition `part`.
pub fn partition_prefix(part: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(PARTITION);
    put_i64(&mut k, part);
    k
}

/// `'P' part sub`.
pub fn sub_prefix(part: i64, sub: u8) -> Vec<u8> {
    let mut k = partition_prefix(part);
    k.push(sub);
    k
}

/// The partition number of a key under [`PARTITION`].
pub fn partition_of_key(key: &[u8]) -> Option<i64> {
    if key.first() != Some(&PARTITION) {
        return None;
    }
    get_i64(&key[1..])
}

/// `'P' part 'c' ref`: the prefix of every chunk of a series in a partition.
pub fn chunk_series_prefix(part: i64, r: SeriesRef) -> Vec<u8> {
    let mut k = sub_prefix(part, CHUNK);
    k.extend_from_slice(&r.to_be_bytes());
    k
}

/// The key of a chunk.
pub fn chunk_key(part: i64, r: SeriesRef, mint: i64, seq: u64) -> Vec<u8> {
    let mut k = chunk_series_prefix(part, r);
    put_i64(&mut k, mint);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes a chunk key's `(ref, mint, seq)`.
pub fn parse_chunk_key(key: &[u8]) -> Option<(SeriesRef, i64, u64)> {
    if key.len() != 34 || key[9] != CHUNK {
        return None;
    }
    Some((
        get_u64(&key[10..])?,
        get_i64(&key[18..])?,
        get_u64(&key[26..])?,
    ))
}

/// `'P' part 't' seq index`: a timestamp column written by the compaction `seq`.
pub fn column_key(part: i64, column: crate::chunk::decimal::ColumnRef) -> Vec<u8> {
    let mut k = sub_prefix(part, COLUMN);
    k.extend_from_slice(&column.seq.to_be_bytes());
    k.extend_from_slice(&column.index.to_be_bytes());
    k
}

/// The column named by a [`column_key`].
pub fn parse_column_key(key: &[u8]) -> Option<crate::chunk::decimal::ColumnRef> {
    if key.len() != 26 || key[9] != COLUMN {
        return None;
    }
    Some(crate::chunk::decimal::ColumnRef {
        seq: get_u64(&key[10..])?,
        index: get_u64(&key[18..])?,
    })
}

/// The key of a series' labels in a partition.
pub fn series_key(part: i64, r: SeriesRef) -> Vec<u8> {
    let mut k = sub_prefix(part, SERIES);
    k.extend_from_slice(&r.to_be_bytes());
    k
}

/// Decodes a series key's ref.
pub fn parse_series_key(key: &[u8]) -> Option<SeriesRef> {
    if key.len() != 18 || key[9] != SERIES {
        return None;
    }
    get_u64(&key[10..])
}

/// `'P' part 'b' ref`: the prefix of the bounds fragments of one series.
pub fn bounds_series_prefix(part: i64, r: SeriesRef) -> Vec<u8> {
    let mut k = sub_prefix(part, BOUNDS);
    k.extend_from_slice(&r.to_be_bytes());
    k
}

/// The key of the bounds of the chunks that write `seq` added to series `r`.
pub fn bounds_key(part: i64, r: SeriesRef, seq: u64) -> Vec<u8> {
    let mut k = bounds_series_prefix(part, r);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes a bounds key's `(ref, seq)`.
pub fn parse_bounds_key(key: &[u8]) -> Option<(SeriesRef, u64)> {
    if key.len() != 26 || key[9] != BOUNDS {
        return None;
    }
    Some((get_u64(&key[10..])?, get_u64(&key[18..])?))
}

/// `'P' part 'x' esc(name)`: the prefix of the postings of every value of a label.
pub fn postings_name_prefix(part: i64, name: &str) -> Vec<u8> {
    let mut k = sub_prefix(part, POSTINGS);
    put_escaped(&mut k, name.as_bytes());
    k
}

/// `'P' part 'x' esc(name) esc(value)`: the prefix of the fragments of one list.
pub fn postings_prefix(part: i64, name: &str, value: &str) -> Vec<u8> {
    let mut k = postings_name_prefix(part, name);
    put_escaped(&mut k, value.as_bytes());
    k
}

/// The key of a postings fragment.
pub fn postings_key(part: i64, name: &str, value: &str, seq: u64) -> Vec<u8> {
    let mut k = postings_prefix(part, name, value);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes a postings key's `(name, value)`.
pub fn parse_postings_key(key: &[u8]) -> Option<(String, String)> {
    if key.len() < 10 || key[9] != POSTINGS {
        return None;
    }
    let mut rest = &key[10..];
    let name = take_escaped(&mut rest)?;
    let value = take_escaped(&mut rest)?;
    if rest.len() != 8 {
        return None;
    }
    Some((
        String::from_utf8(name).ok()?,
        String::from_utf8(value).ok()?,
    ))
}

/// Decodes `src` as exactly one escaped, terminated UTF-8 string (the value part of a
/// postings key); `None` if it is not.
pub fn parse_escaped_str(src: &[u8]) -> Option<String> {
    let mut rest = src;
    let s = take_escaped(&mut rest)?;
    if !rest.is_empty() {
        return None;
    }
    String::from_utf8(s).ok()
}

/// The key of a stats fragment.
pub fn stats_key(part: i64, seq: u64) -> Vec<u8> {
    let mut k = sub_prefix(part, STATS);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The smallest key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return p;
        }
    }
    vec![0xff; 64]
}

fn put_escaped(dst: &mut Vec<u8>, s: &[u8]) {
    crate::labels::put_escaped(dst, s);
}

fn take_escaped(src: &mut &[u8]) -> Option<Vec<u8>> {
    crate::labels::take_escaped(src, 0).ok()
}

/// Encodes a sorted postings list: count, then varint deltas.
pub fn encode_postings(refs: &[SeriesRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(refs.len() * 2 + 4);
    strata_kv::coding::put_varint64(&mut out, refs.len() as u64);
    let mut prev = 0u64;
    for &r in refs {
        strata_kv::coding::put_varint64(&mut out, r.wrapping_sub(prev));
        prev = r;
    }
    out
}

/// Decodes [`encode_postings`]; `Err(offset)` where the bytes stop making sense.
pub fn decode_postings(src: &[u8]) -> Result<Vec<SeriesRef>, usize> {
    let mut d = strata_kv::coding::Decoder::new(src);
    let n = d.varint64().ok_or(0usize)?;
    // Each entry takes at least one byte: bound the allocation by the input.
    if n > src.len() as u64 {
        return Err(0);
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut prev = 0u64;
    for i in 0..n {
        let at = d.position();
        let delta = d.varint64().ok_or(at)?;
        let r = prev.checked_add(delta).ok_or(at)?;
        if i > 0 && delta == 0 {
            return Err(at);
        }
        out.push(r);
        prev = r;
    }
    if !d.is_empty() {
        return Err(d.position());
    }
    Ok(out)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes chunk bounds `(mint, maxt)` (maxt >= mint): count, then per chunk zig-zag
/// `mint - previous maxt` (0 before the first) and `maxt - mint`, varints.
pub fn encode_bounds(bounds: &[(i64, i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bounds.len() * 6);
    strata_kv::coding::put_varint64(&mut out, bounds.len() as u64);
    let mut prev = 0i64;
    for &(mint, maxt) in bounds {
        strata_kv::coding::put_varint64(&mut out, zigzag(mint.wrapping_sub(prev)));
        strata_kv::coding::put_varint64(&mut out, maxt.wrapping_sub(mint) as u64);
        prev = maxt;
    }
    out
}

/// Whether any chunk of [`encode_bounds`]' `src` overlaps `[mint, maxt]`; `Err(offset)`
/// where the bytes stop making sense (checked up to the first overlap).
pub fn bounds_overlap(src: &[u8], mint: i64, maxt: i64) -> Result<bool, usize> {
    walk_bounds(src, |cmint, cmaxt| cmint <= maxt && cmaxt >= mint)
}

/// Appends the chunk bounds of [`encode_bounds`]' `src` to `out`; `Err(offset)` where the
/// bytes stop making sense (`out` may then hold some of them).
pub fn decode_bounds(src: &[u8], out: &mut Vec<(i64, i64)>) -> Result<(), usize> {
    walk_bounds(src, |cmint, cmaxt| {
        out.push((cmint, cmaxt));
        false
    })
    .map(|_| ())
}

/// Calls `stop` with each chunk's `(mint, maxt)` of [`encode_bounds`]' `src` until it
/// returns true (then `Ok(true)`, the rest unchecked); `Err(offset)` where the bytes stop
/// making sense.
fn walk_bounds(src: &[u8], mut stop: impl FnMut(i64, i64) -> bool) -> Result<bool, usize> {
    let mut d = strata_kv::coding::Decoder::new(src);
    let n = d.varint64().ok_or(0usize)?;
    let mut prev = 0i64;
    for _ in 0..n {
        let at = d.position();
        let cmint = prev.wrapping_add(unzigzag(d.varint64().ok_or(at)?));
        let span = d.varint64().ok_or(at)?;
        let cmaxt = cmint.checked_add_unsigned(span).ok_or(at)?;
        if stop(cmint, cmaxt) {
            return Ok(true);
        }
        prev = cmaxt;
    }
    if !d.is_empty() {
        return Err(d.position());
    }
    Ok(false)
}

/// Encodes a stats fragment: zig-zag varints `samples, chunks, chunk_bytes, series`
/// (deltas; docs/format/tsdb-keys.md).
pub fn encode_stats(vals: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in vals {
        strata_kv::coding::put_varint64(&mut out, zigzag(v));
    }
    out
}

/// Decodes [`encode_stats`]' four values.
pub fn decode_stats(src: &[u8]) -> Option<[i64; 4]> {
    let mut d = strata_kv::coding::Decoder::new(src);
    let mut out = [0i64; 4];
    for o in &mut out {
        let v = d.varint64()?;
        *o = unzigzag(v);
    }
    d.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i64_keys_sort_as_numbers() {
        let vals = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let enc: Vec<Vec<u8>> = vals
            .iter()
            .map(|&v| {
                let mut k = Vec::new();
                put_i64(&mut k, v);
                k
            })
            .collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        for (v, k) in vals.iter().zip(&enc) {
            assert_eq!(get_i64(k), Some(*v));
        }
    }

    #[test]
    fn keys_round_trip() {
        let k = chunk_key(-3, 42, -1000, 9);
        assert_eq!(partition_of_key(&k), Some(-3));
        assert_eq!(parse_chunk_key(&k), Some((42, -1000, 9)));
        assert_eq!(parse_series_key(&series_key(5, 7)), Some(7));
        let pk = postings_key(1, "job", "a\0b", 3);
        assert_eq!(
            parse_postings_key(&pk),
            Some(("job".to_string(), "a\0b".to_string()))
        );
        assert!(pk.starts_with(&postings_name_prefix(1, "job")));
        // A value that is a prefix of another never shares its list's prefix.
        assert!(!postings_key(1, "job", "ab", 0).starts_with(&postings_prefix(1, "job", "a")));
    }

    #[test]
    fn bounds_answer_overlaps_and_reject_garbage() {
        let b = [
            (-50, -10),
            (100, 200),
            (i64::MIN, i64::MIN + 1),
            (300, i64::MAX),
        ];
        let enc = encode_bounds(&b);
        assert_eq!(bounds_overlap(&enc, -9, 99), Ok(false));
        assert_eq!(bounds_overlap(&enc, 1000, 2000), Ok(true));
        assert_eq!(bounds_overlap(&enc, i64::MIN, i64::MIN), Ok(true));
        let enc = encode_bounds(&b[..2]);
        assert_eq!(bounds_overlap(&enc, -9, 99), Ok(false));
        assert_eq!(bounds_overlap(&enc, -10, -10), Ok(true));
        assert_eq!(bounds_overlap(&enc, 200, 250), Ok(true));
        assert_eq!(bounds_overlap(&enc, 201, 250), Ok(false));
        assert_eq!(bounds_overlap(&encode_bounds(&[]), 0, 0), Ok(false));
        assert!(bounds_overlap(&[2, 1], 0, 0).is_err());
        assert!(bounds_overlap(&[1, 0, 0, 7], 5, 5).is_err());
        let mut out = Vec::new();
        assert_eq!(decode_bounds(&encode_bounds(&b), &mut out), Ok(()));
        assert_eq!(out, b);
        assert!(decode_bounds(&[2, 1], &mut out).is_err());
        assert!(decode_bounds(&[1, 0, 0, 7], &mut out).is_err());
        assert_eq!(parse_bounds_key(&bounds_key(-2, 9, 4)), Some((9, 4)));
        assert!(bounds_key(3, 9, 4).starts_with(&bounds_series_prefix(3, 9)));
    }

    #[test]
    fn postings_round_trip_and_reject_garbage() {
        let refs = vec![1, 2, 10, 1 << 40];
        assert_eq!(decode_postings(&encode_postings(&refs)), Ok(refs));
        assert!(decode_postings(&[5, 1]).is_err());
        assert!(decode_postings(&[2, 1, 0]).is_err());
        assert!(decode_postings(&[0xff; 12]).is_err());
    }
}
