//! The Prometheus remote write 1.0 / remote read messages (`../shared/prompb/*.proto`),
//! declared by hand with `prost` derives so that the build needs no `protoc`. Field numbers
//! match the `.proto` files exactly; fields Strata does not use (exemplars, metadata) are
//! declared so they are skipped cheaply, and unknown fields are ignored as protobuf wants.

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// Series with their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric metadata (type, help, unit): accepted and ignored.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.MetricMetadata` (only what is needed to skip it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// Metric type.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels (should be sorted by name).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars: accepted and ignored.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histograms: not supported, counted as rejected.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Timestamp (ms).
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.Histogram`, reduced to its timestamp (the rest is skipped unread).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// Timestamp (ms).
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// `prometheus.ReadRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRequest {
    /// Queries, answered in order.
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    /// Response types the client accepts, in order of preference (0 SAMPLES, 1
    /// STREAMED_XOR_CHUNKS).
    #[prost(int32, repeated, tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

/// `ReadRequest.ResponseType.SAMPLES`.
pub const RESPONSE_SAMPLES: i32 = 0;
/// `ReadRequest.ResponseType.STREAMED_XOR_CHUNKS`.
pub const RESPONSE_STREAMED_XOR_CHUNKS: i32 = 1;

/// `prometheus.Query`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    /// Start (ms, inclusive).
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    /// End (ms, inclusive).
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    /// Matchers.
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
}

/// `prometheus.LabelMatcher`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelMatcher {
    /// 0 EQ, 1 NEQ, 2 RE, 3 NRE.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Label name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Value or regex.
    #[prost(string, tag = "3")]
    pub value: String,
}

/// `prometheus.ReadResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadResponse {
    /// One result per query.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<QueryResult>,
}

/// `prometheus.QueryResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryResult {
    /// Series with samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.ChunkedReadResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkedReadResponse {
    /// Series with chunks.
    #[prost(message, repeated, tag = "1")]
    pub chunked_series: Vec<ChunkedSeries>,
    /// Index of the query this frame answers.
    #[prost(int64, tag = "2")]
    pub query_index: i64,
}

/// `prometheus.ChunkedSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkedSeries {
    /// Sorted labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Chunks in start-time order.
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<Chunk>,
}

/// `prometheus.Chunk`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    /// First timestamp.
    #[prost(int64, tag = "1")]
    pub min_time_ms: i64,
    /// Last timestamp.
    #[prost(int64, tag = "2")]
    pub max_time_ms: i64,
    /// 1 = XOR.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    /// Prometheus' XOR chunk bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

/// A remote-write request decoded without copying, for the ingest hot path: label names
/// and values borrow the request bytes, and the series' labels and samples are ranges of
/// three flat arrays (a few allocations per request instead of several per series).
///
/// Decoding agrees with `prost` on [`WriteRequest`]: same series, labels and samples
/// (tested), strings checked as UTF-8 ([`decode_write_request`]; or not,
/// [`decode_write_request_deferred`], for a caller that checks what it must later),
/// unknown fields skipped. It is stricter in one way
/// (groups, a wire type no Prometheus message uses, are refused) and laxer in another
/// (the ignored metadata, exemplars and histograms are skipped unread).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteRequestView<'a> {
    /// The series, in request order.
    pub series: Vec<SeriesView>,
    /// The labels of all series: `(name, value)` bytes, in request order (UTF-8 unless
    /// decoded by [`decode_write_request_deferred`]).
    pub labels: Vec<(&'a [u8], &'a [u8])>,
    /// The samples of all series.
    pub samples: Vec<Sample>,
    /// The decoded bytes (empty for a view of an owned request).
    pub body: &'a [u8],
}

/// One series of a [`WriteRequestView`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesView {
    /// Its labels in [`WriteRequestView::labels`].
    pub labels: std::ops::Range<usize>,
    /// Its samples in [`WriteRequestView::samples`].
    pub samples: std::ops::Range<usize>,
    /// How many native histograms it carried (not decoded).
    pub histograms: usize,
    /// Where its label fields are in [`WriteRequestView::body`], when they are one run of
    /// bytes (as every sender writes them: labels first); else empty. Equal bytes decode
    /// to equal labels, so a receiver can recognize a series it saw by these bytes.
    pub label_bytes: std::ops::Range<usize>,
}

impl<'a> WriteRequestView<'a> {
    /// The labels of `s`.
    pub fn labels_of(&self, s: &SeriesView) -> &[(&'a [u8], &'a [u8])] {
        self.labels.get(s.labels.clone()).unwrap_or_default()
    }

    /// The labels of `s` as strings; `None` if one is not UTF-8.
    pub fn labels_str_of(&self, s: &SeriesView) -> Option<Vec<(&'a str, &'a str)>> {
        self.labels_of(s)
            .iter()
            .map(|&(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
            .collect()
    }

    /// The bytes of the label fields of `s` (see [`SeriesView::label_bytes`]).
    pub fn label_bytes_of(&self, s: &SeriesView) -> &'a [u8] {
        self.body.get(s.label_bytes.clone()).unwrap_or_default()
    }

    /// The samples of `s`.
    pub fn samples_of(&self, s: &SeriesView) -> &[Sample] {
        self.samples.get(s.samples.clone()).unwrap_or_default()
    }

    /// The view emptied, its vectors kept (with their capacity) for another request's
    /// labels, whatever they borrow from.
    pub fn into_spare<'b>(self) -> WriteRequestView<'b> {
        let WriteRequestView {
            mut series,
            mut labels,
            mut samples,
            body: _,
        } = self;
        series.clear();
        samples.clear();
        labels.clear();
        WriteRequestView {
            series,
            // An empty vector mapped in place onto a type of the same layout: the standard
            // library's in-place collect keeps the allocation (tested), no unsafe needed.
            labels: labels
                .into_iter()
                .map(|_| -> (&'b [u8], &'b [u8]) { (&[], &[]) })
                .collect(),
            samples,
            body: &[],
        }
    }

    /// A view of an owned request (for callers that built one).
    pub fn of(req: &'a WriteRequest) -> Self {
        let mut v = WriteRequestView::default();
        for ts in &req.timeseries {
            let (l0, s0) = (v.labels.len(), v.samples.len());
            v.labels.extend(
                ts.labels
                    .iter()
                    .map(|l| (l.name.as_bytes(), l.value.as_bytes())),
            );
            v.samples.extend_from_slice(&ts.samples);
            v.series.push(SeriesView {
                labels: l0..v.labels.len(),
                samples: s0..v.samples.len(),
                histograms: ts.histograms.len(),
                label_bytes: 0..0,
            });
        }
        v
    }
}

/// Why bytes are not a valid [`WriteRequest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid protobuf at byte {offset}: {reason}")]
pub struct DecodeError {
    /// Offset in the message where decoding stopped.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// A cursor over protobuf bytes; `base` is the offset of `buf` in the whole message.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Wire { buf, pos: 0, base }
    }

    fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            offset: self.base + self.pos,
            reason,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Field keys and most lengths are one byte: that case inline, the rest in
    /// [`Wire::varint_long`].
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_long()
    }

    fn varint_long(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            // The tenth byte may only carry the top bit of a u64 (as prost checks).
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// A field key: `(field number, wire type)`.
    fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let k = self.varint()?;
        if k > u64::from(u32::MAX) {
            return Err(self.err("field key out of range"));
        }
        let (tag, wire) = ((k >> 3) as u32, (k & 7) as u8);
        if tag == 0 {
            return Err(self.err("field number 0"));
        }
        Ok((tag, wire))
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self
            .buf
            .get(self.pos..self.pos + 8)
            .ok_or_else(|| self.err("truncated fixed64"))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        self.pos += 8;
        Ok(u64::from_le_bytes(a))
    }

    /// A length-delimited field's bytes, with their offset in the message.
    fn len_delimited(&mut self) -> Result<(&'a [u8], usize), DecodeError> {
        let at = self.pos;
        let n = self.varint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(DecodeError {
                offset: self.base + at,
                reason: "length-delimited field runs past the end",
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok((&self.buf[start..self.pos], self.base + start))
    }

    /// A string field's bytes, checked as UTF-8 if `CHECK`.
    fn string<const CHECK: bool>(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let (b, _) = self.len_delimited()?;
        utf8::<CHECK>(b, self.base + at)
    }

    fn skip(&mut self, wire: u8) -> Result<(), DecodeError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.fixed64().map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_FIXED32 => {
                if self.buf.len() - self.pos < 4 {
                    return Err(self.err("truncated fixed32"));
                }
                self.pos += 4;
                Ok(())
            }
            _ => Err(self.err("unsupported wire type")),
        }
    }

    /// Checks that a known field has the wire type it must have.
    fn expect(&self, wire: u8, want: u8) -> Result<(), DecodeError> {
        if wire == want {
            Ok(())
        } else {
            Err(self.err("wrong wire type for the field"))
        }
    }
}

/// Decodes a [`WriteRequest`] without copying its strings. Arbitrary bytes give an error,
/// never a panic; memory is bounded by the input's size.
pub fn decode_write_request(buf: &[u8]) -> Result<WriteRequestView<'_>, DecodeError> {
    decode::<true>(buf, WriteRequestView::default())
}

/// [`decode_write_request`] without checking that label names and values are UTF-8: the
/// caller must check the labels it does not find byte for byte in the store (whose
/// labels were checked when created), and answer with [`decode_write_request`]'s error
/// when one is not UTF-8. Anything else wrong with the bytes is an error here too.
pub fn decode_write_request_deferred(buf: &[u8]) -> Result<WriteRequestView<'_>, DecodeError> {
    decode::<false>(buf, WriteRequestView::default())
}

/// [`decode_write_request_deferred`] into the vectors of `spare` (from
/// [`WriteRequestView::into_spare`]): a server decoding request after request reuses them
/// instead of growing fresh ones, megabytes each, every time.
pub fn decode_write_request_deferred_reusing<'a>(
    buf: &'a [u8],
    spare: WriteRequestView<'static>,
) -> Result<WriteRequestView<'a>, DecodeError> {
    decode::<false>(buf, spare.into_spare())
}

fn decode<'a, const CHECK: bool>(
    buf: &'a [u8],
    spare: WriteRequestView<'_>,
) -> Result<WriteRequestView<'a>, DecodeError> {
    let mut out = spare.into_spare();
    out.body = buf;
    // Typical Prometheus series take ~100-200 bytes with a handful of labels of ~20
    // bytes: reserve for that (at most about twice the input's size) instead of growing
    // and copying.
    out.series.reserve(buf.len() / 128);
    out.labels.reserve(buf.len() / 16);
    out.samples.reserve(buf.len() / 64);
    let mut w = Wire::new(buf, 0);
    while !w.done() {
        let (tag, wire) = w.key()?;
        match tag {
            1 => {
                w.expect(wire, WIRE_LEN)?;
                let (b, at) = w.len_delimited()?;
                decode_series::<CHECK>(b, at, &mut out)?;
            }
            _ => w.skip(wire)?,
        }
    }
    Ok(out)
}

fn decode_series<'a, const CHECK: bool>(
    buf: &'a [u8],
    base: usize,
    out: &mut WriteRequestView<'a>,
) -> Result<(), DecodeError> {
    let (l0, s0) = (out.labels.len(), out.samples.len());
    let mut histograms = 0;
    let mut w = Wire::new(buf, base);
    // The label fields: where the first starts, where the last ends, and their total
    // length; they are one run when that spans exactly the total.
    let (mut first, mut last_end, mut total) = (usize::MAX, 0, 0);
    while !w.done() {
        let field_at = w.pos;
        // Fast paths for the layouts every sender writes, each giving what the general
        // path below gives for the same bytes: a label field `0a L 0a n <name> 12 m
        // <value>` and a sample field `12 L 09 <value> 10 <timestamp>`, one-byte lengths.
        if let Some(&[0x0a, l, 0x0a, n]) = buf.get(field_at..field_at + 4) {
            let (l, n) = (usize::from(l), usize::from(n));
            let (end, v) = (field_at + 2 + l, field_at + 4 + n);
            if l < 0x80 && n < 0x80 && n + 4 <= l && end <= buf.len() {
                // `v + 1 < end`: both bytes of the value's key and length are there.
                if buf[v] == 0x12 && usize::from(buf[v + 1]) == l - n - 4 {
                    // Offsets as `decode_label` reports them.
                    let at = base + field_at + 2;
                    let name = utf8::<CHECK>(&buf[field_at + 4..v], at + 1)?;
                    let value = utf8::<CHECK>(&buf[v + 2..end], at + n + 3)?;
                    out.labels.push((name, value));
                    first = first.min(field_at);
                    (last_end, total) = (end, total + 2 + l);
                    w.pos = end;
                    continue;
                }
            }
        }
        if let Some(&[0x12, l, 0x09]) = buf.get(field_at..field_at + 3) {
            let (l, end) = (usize::from(l), field_at + 2 + usize::from(l));
            if (11..=19).contains(&l) && end <= buf.len() && buf[field_at + 11] == 0x10 {
                if let Some(t) = varint_exact(&buf[field_at + 12..end]) {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&buf[field_at + 3..field_at + 11]);
                    out.samples.push(Sample {
                        value: f64::from_le_bytes(v),
                        timestamp: t as i64,
                    });
                    w.pos = end;
                    continue;
                }
            }
        }
        let (tag, wire) = w.key()?;
        match tag {
            1 => {
                w.expect(wire, WIRE_LEN)?;
                let (b, at) = w.len_delimited()?;
                out.labels.push(decode_label::<CHECK>(b, at)?);
                first = first.min(field_at);
                (last_end, total) = (w.pos, total + w.pos - field_at);
            }
            2 => {
                w.expect(wire, WIRE_LEN)?;
                let (b, at) = w.len_delimited()?;
                out.samples.push(decode_sample(b, at)?);
            }
            3 => {
                w.expect(wire, WIRE_LEN)?;
                w.len_delimited()?;
            }
            4 => {
                w.expect(wire, WIRE_LEN)?;
                w.len_delimited()?;
                histograms += 1;
            }
            _ => w.skip(wire)?,
        }
    }
    let label_bytes = if first != usize::MAX && last_end - first == total {
        base + first..base + last_end
    } else {
        0..0
    };
    out.series.push(SeriesView {
        labels: l0..out.labels.len(),
        samples: s0..out.samples.len(),
        histograms,
        label_bytes,
    });
    Ok(())
}

/// The varint that is exactly `b` (one to nine bytes, the top bit set on all but the
/// last), as [`Wire::varint`] reads it; `None` for anything else.
#[inline(always)]
fn varint_exact(b: &[u8]) -> Option<u64> {
    let (&last, init) = b.split_last()?;
    if init.len() > 8 || last >= 0x80 {
        return None;
    }
    let mut v = 0u64;
    for (i, &x) in init.iter().enumerate() {
        if x < 0x80 {
            return None;
        }
        v |= u64::from(x & 0x7f) << (7 * i);
    }
    Some(v | (u64::from(last) << (7 * init.len())))
}

/// `b`, checked as UTF-8 if `CHECK`.
fn utf8<const CHECK: bool>(b: &[u8], offset: usize) -> Result<&[u8], DecodeError> {
    if CHECK && std::str::from_utf8(b).is_err() {
        return Err(DecodeError {
            offset,
            reason: "string is not UTF-8",
        });
    }
    Ok(b)
}

type Pair<'a> = (&'a [u8], &'a [u8]);

fn decode_label<const CHECK: bool>(buf: &[u8], base: usize) -> Result<Pair<'_>, DecodeError> {
    // Fast path, the layout every sender uses: name then value, each under 128 bytes and
    // present, nothing else. Anything else takes the general path below.
    if let [0x0a, n, rest @ ..] = buf {
        let n = usize::from(*n);
        if n < 0x80 && rest.len() >= n + 2 && rest[n] == 0x12 {
            let m = usize::from(rest[n + 1]);
            if m < 0x80 && rest.len() == n + 2 + m {
                return Ok((
                    utf8::<CHECK>(&rest[..n], base + 1)?,
                    utf8::<CHECK>(&rest[n + 2..], base + n + 3)?,
                ));
            }
        }
    }
    let (mut name, mut value): Pair<'_> = (b"", b"");
    let mut w = Wire::new(buf, base);
    while !w.done() {
        let (tag, wire) = w.key()?;
        match tag {
            1 => {
                w.expect(wire, WIRE_LEN)?;
                name = w.string::<CHECK>()?;
            }
            2 => {
                w.expect(wire, WIRE_LEN)?;
                value = w.string::<CHECK>()?;
            }
            _ => w.skip(wire)?,
        }
    }
    Ok((name, value))
}

fn decode_sample(buf: &[u8], base: usize) -> Result<Sample, DecodeError> {
    let mut s = Sample {
        value: 0.0,
        timestamp: 0,
    };
    // Fast path: value then timestamp, both present, nothing else.
    if buf.len() >= 11 && buf[0] == 0x09 && buf[9] == 0x10 {
        let mut w = Wire::new(buf, base);
        w.pos = 1;
        s.value = f64::from_bits(w.fixed64()?);
        w.pos = 10;
        s.timestamp = w.varint()? as i64;
        if w.done() {
            return Ok(s);
        }
        s.timestamp = 0;
    }
    let mut w = Wire::new(buf, base);
    while !w.done() {
        let (tag, wire) = w.key()?;
        match tag {
            1 => {
                w.expect(wire, WIRE_FIXED64)?;
                s.value = f64::from_bits(w.fixed64()?);
            }
            2 => {
                w.expect(wire, WIRE_VARINT)?;
                s.timestamp = w.varint()? as i64;
            }
            _ => w.skip(wire)?,
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
