//! The Prometheus test-script language (`load`, `clear`, `eval instant|range`, `expect ...`),
//! as described in `FORMAT.md` of the shared test data.

pub mod parse;
pub mod run;

pub use parse::{parse_script, Command, EvalCmd, Expect, ExpectedSeries, Point};
pub use run::{run_file, run_script, EvalOutcome, FileReport};
