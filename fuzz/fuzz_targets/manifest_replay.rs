//! Whole-manifest replay (`manifest::recover`): `CURRENT` plus a manifest of arbitrary
//! bytes in a `MemFs`.
//!
//! Input: a mode byte (bit 0: reseal the log checksums first), then the manifest file.
//! Oracle: a recovered state is reproduced exactly by its snapshot edit, after an
//! encode/decode round trip (what a manifest rewrite does).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{put_file, reseal_log};
use strata_kv::filename::{current_path, manifest_path};
use strata_kv::fs::{FileSystem, MemFs};
use strata_kv::manifest::{recover, ManifestState, VersionEdit};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut data = rest.to_vec();
    if mode & 1 == 1 {
        reseal_log(&mut data);
    }
    let fs = MemFs::new();
    let dir = Path::new("/db");
    fs.create_dir_all(dir).expect("mkdir");
    put_file(&fs, &current_path(dir), b"MANIFEST-000001\n");
    put_file(&fs, &manifest_path(dir, 1), &data);
    let Ok((number, state)) = recover(&fs, dir) else {
        return;
    };
    assert_eq!(number, 1);
    let snap = VersionEdit::decode(&state.snapshot_edit().encode(), "snapshot", 0)
        .expect("snapshot edit decodes");
    let mut rebuilt = ManifestState::new();
    rebuilt
        .apply(&snap, "snapshot", 0)
        .expect("snapshot edit applies to an empty state");
    assert_eq!(rebuilt, state, "snapshot edit does not reproduce the state");
});
