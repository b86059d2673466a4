//! Endpoints that clients of a Prometheus server probe although Strata has nothing behind
//! them: Grafana's Prometheus data source asks for exemplars, rules and alerts, and formats
//! queries. Answering in Prometheus' shape (empty where Strata keeps nothing) keeps those
//! clients free of error banners; exemplar and format requests still check their query.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::ApiParams;
use crate::error::ApiError;

fn parsed_query(p: &ApiParams) -> Result<promql_parser::parser::Expr, ApiError> {
    let q =
        p.0.get("query")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": missing or empty"))?;
    promql_parser::parser::parse(q)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// `GET|POST /api/v1/query_exemplars`: Strata stores no exemplars.
pub async fn query_exemplars(p: ApiParams) -> Result<Response, ApiError> {
    parsed_query(&p)?;
    Ok(Json(json!({"status": "success", "data": []})).into_response())
}

/// `GET|POST /api/v1/format_query`: the query pretty-printed.
pub async fn format_query(p: ApiParams) -> Result<Response, ApiError> {
    let expr = parsed_query(&p)?;
    Ok(Json(json!({"status": "success", "data": expr.prettify()})).into_response())
}

/// `GET /api/v1/rules`: Strata evaluates no recording or alerting rules.
pub async fn rules() -> Response {
    Json(json!({"status": "success", "data": {"groups": []}})).into_response()
}

/// `GET /api/v1/alerts`.
pub async fn alerts() -> Response {
    Json(json!({"status": "success", "data": {"alerts": []}})).into_response()
}
