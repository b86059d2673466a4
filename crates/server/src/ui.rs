//! The web page at `/`: a PromQL expression box whose answer is shown as a table and, for
//! range queries, as a line graph. The page is static and compiled into the binary (no
//! files to deploy, no third-party script); it queries `/api/v1/query` and
//! `/api/v1/query_range` from the browser like any other client.
//!
//! These routes sit outside the bearer-token check on purpose: the page holds no data, and
//! a browser cannot attach a bearer token to a plain navigation, so a protected page could
//! never load. The API calls it makes carry the token the user pastes into it.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const CHART_JS: &str = include_str!("../assets/chart.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Only our own scripts, styles and API: data shown on the page (label values from any
/// client) can never run as script, and the page cannot be framed by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's routes: `/` and its assets under `/ui/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/chart.js",
            get(|| async { asset("text/javascript; charset=utf-8", CHART_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change with the binary; revalidating keeps an upgraded server
            // from running against a stale cached script.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        body,
    )
        .into_response()
}
