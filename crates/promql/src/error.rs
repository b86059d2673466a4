//! Errors a query can fail with. Messages follow Prometheus where scripts compare them.

/// A failed query (or test-script command).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query text did not parse.
    #[error("parse error: {0}")]
    Parse(String),
    /// Evaluation failed; the message is Prometheus' wording where one exists.
    #[error("{0}")]
    Eval(String),
    /// The query would hold more samples in memory than allowed.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The query would hold more series × steps in memory than allowed.
    #[error("query processing would hold too many series × steps in memory in query execution")]
    TooManyStepSlots,
    /// The query ran past its deadline.
    #[error("query timed out in query execution")]
    Timeout,
    /// The query was cancelled by its caller.
    #[error("query was canceled in query execution")]
    Canceled,
    /// The storage behind the [`crate::Queryable`] failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A test script is malformed.
    #[error("{file}:{line}: {msg}")]
    Script {
        /// File the script came from.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for an evaluation error.
pub(crate) fn eval_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Eval(msg.into()))
}
