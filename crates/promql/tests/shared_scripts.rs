//! Runs every Prometheus conformance script in `shared/promql-testdata/` (beside the repo)
//! and the project's own scripts in `tests/scripts/`.
//!
//! Every eval that is not skipped must pass. Skips are allowed only for native-histogram
//! samples (`{{...}}`, which the float-only store cannot hold); `MIN_SHARED_PASSED` makes
//! sure evals do not quietly turn into skips.

use std::path::{Path, PathBuf};

use strata_promql::testscript::run_file;

/// Evals of the shared scripts that pass (all that are not skipped). Raise, never lower.
const MIN_SHARED_PASSED: usize = 747;

fn scripts(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    v.sort();
    v
}

#[test]
fn shared_prometheus_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/promql-testdata");
    if !dir.exists() {
        panic!("shared test data not found at {}", dir.display());
    }
    let (mut p, mut f, mut s) = (0, 0, 0);
    let mut failures = Vec::new();
    for path in scripts(&dir) {
        let rep = run_file(&path).unwrap();
        println!(
            "{}: {} passed, {} failed, {} skipped",
            rep.name, rep.passed, rep.failed, rep.skipped
        );
        p += rep.passed;
        f += rep.failed;
        s += rep.skipped;
        failures.extend(rep.failures.iter().map(|m| format!("{}: {m}", rep.name)));
    }
    println!("{p} passed, {f} failed, {s} skipped");
    assert_eq!(f, 0, "shared evals failed: {failures:#?}");
    assert!(
        p >= MIN_SHARED_PASSED,
        "only {p} shared evals passed, ratchet is {MIN_SHARED_PASSED}"
    );
}

/// The project's own scripts: every eval passes, none is skipped.
#[test]
fn own_scripts_all_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let (mut p, mut files) = (0, 0);
    for path in scripts(&dir) {
        let rep = run_file(&path).unwrap();
        println!(
            "{}: {} passed, {} failed, {} skipped",
            rep.name, rep.passed, rep.failed, rep.skipped
        );
        assert_eq!(rep.failed, 0, "{}: {:#?}", rep.name, rep.failures);
        assert_eq!(rep.skipped, 0, "{}: {:#?}", rep.name, rep.skips);
        assert!(rep.passed > 0, "{}: nothing ran", rep.name);
        p += rep.passed;
        files += 1;
    }
    println!("{p} passed in {files} own scripts");
    assert!(files >= 11, "own scripts missing from {}", dir.display());
}
