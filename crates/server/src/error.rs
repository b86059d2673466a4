//! API errors in Prometheus' JSON shape: `{"status":"error","errorType":..,"error":..}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Prometheus' `errorType`: `bad_data`, `execution`, `timeout`, `canceled`, `internal`,
    /// `unavailable`, `not_found`.
    pub error_type: &'static str,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// 400 `bad_data`.
    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: "bad_data",
            message: message.into(),
        }
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: message.into(),
        }
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "unavailable",
            message: message.into(),
        }
    }

    /// The mapping of PromQL errors, as Prometheus answers them.
    pub fn from_promql(e: strata_promql::Error) -> Self {
        use strata_promql::Error as E;
        let (status, error_type) = match &e {
            E::Parse(_) => (StatusCode::BAD_REQUEST, "bad_data"),
            E::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            E::Canceled => (StatusCode::SERVICE_UNAVAILABLE, "canceled"),
            E::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
        };
        ApiError {
            status,
            error_type,
            message: e.to_string(),
        }
    }
}

impl From<strata_tsdb::Error> for ApiError {
    fn from(e: strata_tsdb::Error) -> Self {
        match e {
            strata_tsdb::Error::InvalidArgument(m) => ApiError::bad_data(m),
            strata_tsdb::Error::Matcher(m) => ApiError::bad_data(m.to_string()),
            strata_tsdb::Error::Label(m) => ApiError::bad_data(m.to_string()),
            strata_tsdb::Error::ReadOnly(_) | strata_tsdb::Error::Closed => {
                ApiError::unavailable(e.to_string())
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.error_type,
            "error": self.message,
        });
        (self.status, axum::Json(body)).into_response()
    }
}
