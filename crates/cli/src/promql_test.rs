//! `strata promql-test FILE...`: runs Prometheus test scripts against Strata's PromQL engine.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

/// Arguments of `strata promql-test`.
#[derive(Debug, Args)]
pub struct PromqlTestArgs {
    /// Test scripts (`.test` files in the Prometheus test-script language).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print each failed eval with the difference.
    #[arg(long, short)]
    verbose: bool,
    /// Print each skipped eval with the reason.
    #[arg(long)]
    show_skips: bool,
}

/// Runs the scripts, prints `file: N passed, N failed, N skipped` per file and a total line;
/// fails if any eval failed.
pub fn run(args: PromqlTestArgs) -> Result<()> {
    let (mut p, mut f, mut s) = (0, 0, 0);
    for path in &args.files {
        let rep = strata_promql::testscript::run_file(path)?;
        println!(
            "{}: {} passed, {} failed, {} skipped",
            path.display(),
            rep.passed,
            rep.failed,
            rep.skipped
        );
        if args.verbose {
            for m in &rep.failures {
                println!("  FAIL {m}");
            }
        }
        if args.show_skips {
            for m in &rep.skips {
                println!("  SKIP {m}");
            }
        }
        p += rep.passed;
        f += rep.failed;
        s += rep.skipped;
    }
    println!("{p} passed, {f} failed, {s} skipped");
    if f > 0 {
        bail!("{f} evals failed");
    }
    Ok(())
}
