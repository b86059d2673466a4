//! Internal keys: a user key plus the sequence number and kind of the write.
//!
//! An internal key is `user_key ++ fixed64_le((seqno << 8) | kind)`. Internal keys sort by
//! user key ascending, then by sequence number *descending*, so that the newest version of
//! a key comes first and a lookup at snapshot `s` seeks to `(key, s)` and takes the first
//! entry with that user key.

use std::cmp::Ordering;

/// Sequence numbers are 56 bits; the low byte of the trailer holds the kind.
pub const MAX_SEQUENCE: u64 = (1 << 56) - 1;

/// Size of the trailer appended to a user key.
pub const TRAILER_LEN: usize = 8;

/// What an entry records about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ValueKind {
    /// A tombstone: the key was deleted at this sequence number.
    Deletion = 0,
    /// A value was written.
    Value = 1,
}

impl ValueKind {
    /// The kind to use in seek keys: the largest kind, so that it sorts before every entry
    /// of the same user key and sequence number.
    pub const FOR_SEEK: ValueKind = ValueKind::Value;

    /// Decodes a kind byte.
    pub fn from_u8(b: u8) -> Option<ValueKind> {
        match b {
            0 => Some(ValueKind::Deletion),
            1 => Some(ValueKind::Value),
            _ => None,
        }
    }
}

/// Packs a sequence number and kind into a trailer.
pub fn pack_trailer(seq: u64, kind: ValueKind) -> u64 {
    debug_assert!(seq <= MAX_SEQUENCE);
    (seq << 8) | kind as u64
}

/// Appends the internal key for `(user_key, seq, kind)` to `dst`.
pub fn append_internal_key(dst: &mut Vec<u8>, user_key: &[u8], seq: u64, kind: ValueKind) {
    dst.extend_from_slice(user_key);
    dst.extend_from_slice(&pack_trailer(seq, kind).to_le_bytes());
}

/// The internal key for `(user_key, seq, kind)`.
pub fn internal_key(user_key: &[u8], seq: u64, kind: ValueKind) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    append_internal_key(&mut k, user_key, seq, kind);
    k
}

/// The key to seek to in order to find the newest version of `user_key` visible at `seq`.
pub fn seek_key(user_key: &[u8], seq: u64) -> Vec<u8> {
    internal_key(user_key, seq, ValueKind::FOR_SEEK)
}

/// The newest version of a key found by a point lookup in one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Value or tombstone.
    pub kind: ValueKind,
    /// Sequence number of that version.
    pub seq: u64,
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
}

/// A decoded internal key borrowing from its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The user's key.
    pub user_key: &'a [u8],
    /// Sequence number of the write.
    pub seq: u64,
    /// What the write did.
    pub kind: ValueKind,
}

/// Decodes an internal key; `None` if it is shorter than the trailer or has an unknown kind.
pub fn parse_internal_key(ikey: &[u8]) -> Option<ParsedKey<'_>> {
    let split = ikey.len().checked_sub(TRAILER_LEN)?;
    let (user_key, trailer) = ikey.split_at(split);
    let t = u64::from_le_bytes(trailer.try_into().ok()?);
    Some(ParsedKey {
        user_key,
        seq: t >> 8,
        kind: ValueKind::from_u8(t as u8)?,
    })
}

/// The user-key part of an internal key (the whole slice if it is too short to have a
/// trailer; callers validate with [`parse_internal_key`] where data comes from disk).
#[inline]
pub fn user_key(ikey: &[u8]) -> &[u8] {
    &ikey[..ikey.len().saturating_sub(TRAILER_LEN)]
}

#[inline]
pub(crate) fn trailer(ikey: &[u8]) -> u64 {
    let n = ikey.len();
    if n < TRAILER_LEN {
        return 0;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&ikey[n - TRAILER_LEN..]);
    u64::from_le_bytes(t)
}

/// Orders internal keys: user key ascending, then trailer (sequence number) descending.
#[inline]
pub fn compare_internal(a: &[u8], b: &[u8]) -> Ordering {
    compare_bytes(user_key(a), user_key(b)).then_with(|| trailer(b).cmp(&trailer(a)))
}

/// Bytewise (lexicographic) order of `a` and `b`, as `a.cmp(b)`, eight bytes per step.
///
/// Keys are short (a few dozen bytes), where the call into the C library's `memcmp`
/// behind `<[u8]>::cmp` costs more than the comparison; this one is inlined.
#[inline]
pub fn compare_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let (mut ac, mut bc) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    for (x, y) in (&mut ac).zip(&mut bc) {
        let (x, y) = (be64(x), be64(y));
        if x != y {
            return x.cmp(&y);
        }
    }
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// The eight bytes of `chunk` as a big-endian number (their bytewise order).
#[inline(always)]
fn be64(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_be_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_bytes_is_slice_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"a",
            b"ab",
            b"abcdefgh",
            b"abcdefgh\x00",
            b"abcdefgi",
            b"abcdefghijklmnop",
            b"abcdefghijklmnoq",
            b"abcdefghijklmno",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\x01",
            b"\x00\x00\x00\x00\x00\x00\x00\x00",
            b"0000000000123456",
            b"0000000000123457",
        ];
        for a in &keys {
            for b in &keys {
                assert_eq!(compare_bytes(a, b), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn ordering_newest_first() {
        let a1 = internal_key(b"a", 1, ValueKind::Value);
        let a2 = internal_key(b"a", 2, ValueKind::Deletion);
        let b1 = internal_key(b"b", 1, ValueKind::Value);
        assert_eq!(compare_internal(&a2, &a1), Ordering::Less);
        assert_eq!(compare_internal(&a1, &b1), Ordering::Less);
        assert_eq!(compare_internal(&seek_key(b"a", 5), &a2), Ordering::Less);
        assert_eq!(compare_internal(&seek_key(b"a", 1), &a1), Ordering::Equal);
        let p = parse_internal_key(&a2).unwrap();
        assert_eq!(
            (p.user_key, p.seq, p.kind),
            (&b"a"[..], 2, ValueKind::Deletion)
        );
        assert!(parse_internal_key(b"short").is_none());
    }
}
