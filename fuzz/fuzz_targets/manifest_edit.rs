//! The version edit decoder (one manifest record) over arbitrary bytes.
//!
//! Oracle: an accepted edit survives encode/decode unchanged, and applying it to an empty
//! state either fails cleanly (leaving the state untouched) or succeeds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_kv::manifest::{ManifestState, VersionEdit};

fuzz_target!(|data: &[u8]| {
    let Ok(edit) = VersionEdit::decode(data, "MANIFEST-000001", 16) else {
        return;
    };
    let again = VersionEdit::decode(&edit.encode(), "MANIFEST-000001", 16).expect("re-decode");
    assert_eq!(edit, again);
    let mut state = ManifestState::new();
    let before = state.clone();
    if state.apply(&edit, "MANIFEST-000001", 16).is_err() {
        assert_eq!(state, before, "a failed apply changed the state");
    }
});
