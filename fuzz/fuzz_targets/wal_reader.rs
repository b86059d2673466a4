//! The WAL reader over arbitrary file contents, under all three tail policies, and the
//! write-batch decoder over every record it returns.
//!
//! Input: a mode byte (bit 0: reseal the checksums first), then the file. Oracle: the
//! policies agree with each other (strict success implies the tolerant ones return the
//! same records; an error under a tolerant policy is an error under the stricter ones),
//! an ended reader stays ended, and a decoded batch re-encodes to the record's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::reseal_log;
use strata_kv::wal::{LogReader, TailPolicy, WAL_MAGIC};
use strata_kv::WriteBatch;

type Outcome = Result<(Vec<Vec<u8>>, u64, bool), String>;

fn read_all(data: &[u8], policy: TailPolicy) -> Outcome {
    let mut r = LogReader::from_bytes_with_policy(data.to_vec(), "fuzz.wal", WAL_MAGIC, policy)
        .map_err(|e| e.to_string())?;
    let mut records = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some(rec)) => {
                assert!(r.last_record_offset() < data.len() as u64);
                records.push(rec);
            }
            Ok(None) => break,
            Err(e) => {
                // An error sticks.
                assert!(r.next_record().is_err());
                return Err(e.to_string());
            }
        }
    }
    assert!(
        matches!(r.next_record(), Ok(None)),
        "an ended reader must stay ended"
    );
    let end = r.end_of_records();
    assert!(end <= data.len() as u64);
    if let Some(t) = r.tail_damage() {
        assert!(
            policy != TailPolicy::Strict,
            "strict reader tolerated {t:?}"
        );
        assert!(t.offset <= data.len() as u64);
    }
    Ok((records, end, r.tail_damage().is_some()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut data = rest.to_vec();
    if mode & 1 == 1 {
        reseal_log(&mut data);
    }
    let strict = read_all(&data, TailPolicy::Strict);
    let torn = read_all(&data, TailPolicy::TolerateTornOnly);
    let any = read_all(&data, TailPolicy::TolerateTornOrCorrupt);
    if let Ok((recs, end, damaged)) = &strict {
        assert!(!damaged);
        let (r2, e2, _) = torn.as_ref().expect("strict succeeded, torn-only failed");
        assert_eq!((recs, end), (r2, e2));
    }
    if let Ok((recs, _, _)) = &torn {
        let (r3, _, _) = any
            .as_ref()
            .expect("torn-only succeeded, tolerate-all failed");
        assert_eq!(recs, r3);
    }
    if let Ok((records, _, _)) = &any {
        for (i, rec) in records.iter().enumerate() {
            if let Ok(batch) = WriteBatch::decode(rec, "fuzz.wal", i as u64) {
                assert_eq!(batch.encoded(), &rec[..]);
                assert_eq!(batch.iter().count(), batch.len());
            }
        }
    }
});
