//! `strata-promql`: the PromQL evaluator of Strata.
//!
//! Queries are parsed with the `promql-parser` crate and evaluated here against any
//! [`Queryable`] (an in-memory [`MemStore`] for tests, `strata-tsdb` later). The engine
//! evaluates range queries range-first: every expression node is evaluated for all steps at
//! once, and each selector fetches its series once for the whole range and slides its
//! lookback or range window over the samples.
//!
//! [`testscript`] implements the Prometheus test-script language (`load`, `clear`, `eval`).
#![deny(clippy::unwrap_used)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod error;
pub mod labels;
pub mod queryable;
pub mod testscript;
pub mod value;

pub use engine::{Engine, EngineOptions, QueryResult};
pub use error::{Error, Result};
pub use labels::Labels;
pub use queryable::{MemStore, Queryable, ReduceFn, Reduced, Series};
pub use value::{Sample, Value};
