//! `strata-tsdb`: Strata's embeddable time-series store.
//!
//! A series is identified by its label set ([`labels::Labels`]); queries select series with
//! label matchers ([`matcher::Matcher`]); samples are stored in compressed chunks
//! ([`chunk`], Gorilla-style [`chunk::XorChunk`]). The head (in-memory recent data), the
//! write-ahead log, the persisted inverted index and retention are built on these pieces and
//! stored in `strata-kv`.
//!
//! ```
//! use strata_tsdb::chunk::XorAppender;
//! use strata_tsdb::labels::Labels;
//! use strata_tsdb::matcher::{MatchOp, Matcher};
//!
//! let series = Labels::from_pairs([("__name__", "up"), ("job", "node")])?;
//! let m = Matcher::new(MatchOp::RegexMatch, "job", "node|prometheus")?;
//! assert!(m.matches(series.get("job")));
//! assert_eq!(m.set_matches(), Some(&["node".to_string(), "prometheus".to_string()][..]));
//!
//! let mut app = XorAppender::new();
//! app.append(1_000, 1.0)?;
//! app.append(16_000, 1.0)?;
//! let samples: Vec<(i64, f64)> = app.chunk().iter().collect::<Result<_, _>>()?;
//! assert_eq!(samples, vec![(1_000, 1.0), (16_000, 1.0)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

mod bounds;
pub mod chunk;
pub mod compact;
pub mod db;
pub mod error;
mod head;
mod index;
pub mod keys;
pub mod labels;
pub mod matcher;
pub mod postings;
pub mod querier;
pub mod wal;

pub use chunk::{Chunk, ChunkError, XorAppender, XorChunk};
pub use compact::CompactStats;
pub use db::{Appender, CommitStats, Options, Tsdb, TsdbCounters, TsdbStats, DAY_MS};
pub use error::{Error, Result};
pub use labels::{Label, LabelError, LabelLimits, Labels, METRIC_NAME};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use postings::{select, MemPostings, PostingsIndex, PostingsList, SeriesRef};
pub use querier::{Querier, Series};
pub use wal::FsyncPolicy;
