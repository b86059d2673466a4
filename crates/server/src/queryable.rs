//! `strata-tsdb` as the PromQL engine's storage: converts matchers and label sets between
//! the parser's types and the store's.

use promql_parser::label::{MatchOp as PMatchOp, Matcher as PMatcher};
use strata_promql::{Labels as PLabels, Queryable, ReduceFn, Reduced, Sample, Series};
use strata_tsdb::{MatchOp, Matcher, Tsdb};

/// Converts a parsed matcher to the store's.
pub fn convert_matcher(m: &PMatcher) -> Result<Matcher, strata_tsdb::MatcherError> {
    let op = match &m.op {
        PMatchOp::Equal => MatchOp::Equal,
        PMatchOp::NotEqual => MatchOp::NotEqual,
        PMatchOp::Re(_) => MatchOp::RegexMatch,
        PMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
    };
    Matcher::new(op, m.name.clone(), m.value.clone())
}

/// Converts parsed matchers.
pub fn convert_matchers(ms: &[PMatcher]) -> strata_promql::Result<Vec<Matcher>> {
    ms.iter()
        .map(|m| convert_matcher(m).map_err(|e| strata_promql::Error::Eval(e.to_string())))
        .collect()
}

/// A series of the store as the engine's (the samples keep their allocation).
fn convert_series(s: strata_tsdb::Series) -> Series {
    Series {
        // The strings move over: sorted, unique and non-empty as the engine wants them.
        labels: PLabels::from_pairs(s.labels.into_vec().into_iter().map(|l| (l.name, l.value))),
        samples: s
            .samples
            .into_iter()
            .map(|(t, v)| Sample { t, v })
            .collect(),
    }
}

/// The store seen by the PromQL engine.
pub struct TsdbQueryable<'a> {
    /// The store.
    pub db: &'a Tsdb,
}

fn storage(e: strata_tsdb::Error) -> strata_promql::Error {
    strata_promql::Error::Storage(e.to_string())
}

impl Queryable for TsdbQueryable<'_> {
    fn select(
        &self,
        matchers: &[PMatcher],
        mint: i64,
        maxt: i64,
    ) -> strata_promql::Result<Vec<Series>> {
        let ms = convert_matchers(matchers)?;
        // Converted on the threads that decode the chunks.
        self.db
            .querier(mint, maxt)
            .select_map(&ms, convert_series)
            .map_err(storage)
    }

    fn select_reduce(
        &self,
        matchers: &[PMatcher],
        mint: i64,
        maxt: i64,
        weight: usize,
        f: &ReduceFn<'_>,
    ) -> strata_promql::Result<Vec<Reduced>> {
        let ms = convert_matchers(matchers)?;
        // Reduced on the threads that decode the chunks, right after each series.
        self.db
            .querier(mint, maxt)
            .select_map_weighted(&ms, weight, |s| f(convert_series(s)))
            .map_err(storage)?
            .into_iter()
            .collect()
    }

    fn label_names(&self) -> strata_promql::Result<Vec<String>> {
        self.db
            .querier(i64::MIN, i64::MAX)
            .label_names(&[])
            .map_err(storage)
    }

    fn label_values(&self, name: &str) -> strata_promql::Result<Vec<String>> {
        self.db
            .querier(i64::MIN, i64::MAX)
            .label_values(name, &[])
            .map_err(storage)
    }
}
