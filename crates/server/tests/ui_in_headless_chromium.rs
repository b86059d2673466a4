//! The web page at `/` in a real browser: the server listens on a loopback port, a few
//! samples are stored, and headless Chromium opens the page with a query in the URL's hash
//! (the page runs such a query on load). The DOM Chromium dumps must hold the table with the
//! stored series and values, and the graph the page drew. Also: the page itself loads
//! without the bearer token, and the API's 401 is shown to the user.
//!
//! Chromium is Debian's `chromium` package, installed by this test when missing (as root
//! with apt-get; `STRATA_UI_TEST_NO_INSTALL=1` turns that off). When it cannot be found
//! or installed, the test is skipped with a message rather than failed.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use strata_server::{router, AppState, Config};
use strata_tsdb::Tsdb;
use tower::ServiceExt;

/// All browser runs of the test together may take this long; past it they are killed.
const BROWSER_BUDGET: Duration = Duration::from_secs(50);
/// Installing Chromium (package download included) may take this long.
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

/// Runs `cmd` in its own process group until it exits or `deadline` passes, then ends
/// whatever is left of the group (Chromium's renderer and helper processes, which may
/// outlive the browser, or everything on a timeout). `Ok(None)` on a timeout.
fn run_bounded(cmd: &mut Command, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => break None,
        }
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    Ok(status)
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}

/// Installs Debian's `chromium`; the package lists are refreshed only when a first
/// attempt fails, since that costs a network round trip per source.
fn install_chromium() -> bool {
    if std::env::var_os("STRATA_UI_TEST_NO_INSTALL").is_some() || !is_root() {
        return false;
    }
    let deadline = Instant::now() + INSTALL_LIMIT;
    let apt = |args: &[&str]| {
        eprintln!("ui test: apt-get {}", args.join(" "));
        let mut cmd = Command::new("apt-get");
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        matches!(run_bounded(&mut cmd, deadline), Ok(Some(s)) if s.success())
    };
    let install = ["install", "-y", "-q", "--no-install-recommends", "chromium"];
    apt(&install) || (apt(&["update", "-q"]) && apt(&install))
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = find_chromium() {
        return Some(p);
    }
    if install_chromium() {
        return find_chromium();
    }
    None
}

/// Opens `url` in headless Chromium and returns the DOM once the page has settled.
/// `--virtual-time-budget` makes Chromium wait for the page's fetches and timers (up to
/// that much virtual time) before dumping, so the query the page runs on load is done.
fn dump_dom(chromium: &Path, url: &str, tmp: &Path, deadline: Instant) -> String {
    let profile = tempfile::tempdir_in(tmp).unwrap();
    let out_path = tmp.join("dom.html");
    let err_path = tmp.join("chromium.log");
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=10000",
        "--window-size=1000,800",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg("--dump-dom")
    .arg(url)
    .stdin(Stdio::null())
    .stdout(File::create(&out_path).unwrap())
    .stderr(File::create(&err_path).unwrap());
    let status = run_bounded(&mut cmd, deadline).expect("starting chromium");
    let log = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        None => {
            panic!("chromium did not finish within the test's {BROWSER_BUDGET:?}; its log:\n{log}")
        }
        Some(s) if !s.success() => panic!("chromium failed ({s}); its log:\n{log}"),
        Some(_) => {}
    }
    std::fs::read_to_string(&out_path).unwrap()
}

/// A server on a free loopback port, over a fresh store in `dir`.
struct Server {
    addr: SocketAddr,
    app: axum::Router,
}

fn start_server(rt: &tokio::runtime::Runtime, dir: &Path, config: Config) -> Server {
    let mut opts = config.tsdb_options();
    opts.background = false;
    let tsdb = Tsdb::open(dir, opts).unwrap();
    let app = router(Arc::new(AppState::new(tsdb, config)));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let served = app.clone();
    // Runs until the runtime is dropped at the end of the test.
    rt.spawn(async move { axum::serve(listener, served).await });
    Server { addr, app }
}

fn send(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, String) {
    rt.block_on(async {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

fn page_url(addr: SocketAddr, pairs: &[(&str, &str)]) -> String {
    let hash = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("http://{addr}/#{hash}")
}

#[test]
fn query_page_shows_table_and_graph_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED query_page_shows_table_and_graph_in_headless_chromium: no chromium found \
             and it could not be installed (apt-get install chromium)"
        );
        return;
    };
    let began = Instant::now();
    let deadline = began + BROWSER_BUDGET;
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tmp.path().join("data");
    let server = start_server(&rt, &data, Config::default());

    // Two series over the last ten minutes, one point a minute; the page asks relative to
    // the browser's clock, so the samples are placed relative to now.
    let now = chrono::Utc::now().timestamp_millis();
    let mut text = String::from("# TYPE ui_test_temp gauge\n");
    for i in 0..10i64 {
        let t = now - (9 - i) * 60_000;
        text.push_str(&format!(
            "ui_test_temp{{room=\"kitchen\"}} {} {t}\n",
            20 + i
        ));
        text.push_str(&format!(
            "ui_test_temp{{room=\"attic\"}} {} {t}\n",
            0.5 * i as f64
        ));
    }
    let req = Request::post("/api/v1/import/prometheus")
        .body(Body::from(text))
        .unwrap();
    let (status, msg) = send(&rt, &server.app, req);
    assert_eq!(status, StatusCode::NO_CONTENT, "{msg}");

    // Instant query: a table of both series with their latest values, no graph.
    let dom = dump_dom(
        &chromium,
        &page_url(
            server.addr,
            &[("expr", "ui_test_temp"), ("mode", "instant")],
        ),
        tmp.path(),
        deadline,
    );
    assert!(
        dom.contains(r#"data-state="done""#),
        "query did not finish:\n{dom}"
    );
    assert!(dom.contains(r#"data-rows="2""#), "{dom}");
    assert!(
        dom.contains(r#"ui_test_temp{room="kitchen"}</td><td class="value">29</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"ui_test_temp{room="attic"}</td><td class="value">4.5</td>"#),
        "{dom}"
    );
    assert!(
        !dom.contains("data-drawn"),
        "an instant query draws no graph:\n{dom}"
    );

    // Range query over the last hour: the graph has one line per series and a legend.
    let dom = dump_dom(
        &chromium,
        &page_url(
            server.addr,
            &[
                ("expr", "ui_test_temp * 2"),
                ("mode", "range"),
                ("range", "3600"),
                ("step", "1m"),
            ],
        ),
        tmp.path(),
        deadline,
    );
    assert!(
        dom.contains(r#"data-state="done""#),
        "query did not finish:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-drawn="true""#),
        "graph not drawn:\n{dom}"
    );
    assert!(dom.contains(r#"data-series-count="2""#), "{dom}");
    assert_eq!(dom.matches(r#"class="series-line""#).count(), 2, "{dom}");
    // Lines with points: a path of at least one segment.
    assert!(dom.contains(r#"d="M"#) && dom.contains('L'), "{dom}");
    // The legend names both series; the table has their last values, doubled.
    assert!(dom.contains(r#"<li><span class="swatch""#), "{dom}");
    assert!(
        dom.contains(r#"{room="kitchen"}</td><td class="value">58</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"{room="attic"}</td><td class="value">9</td>"#),
        "{dom}"
    );

    // An invalid expression: the API's error is shown.
    let dom = dump_dom(
        &chromium,
        &page_url(server.addr, &[("expr", "sum(")]),
        tmp.path(),
        deadline,
    );
    assert!(dom.contains(r#"data-state="error""#), "{dom}");
    assert!(dom.contains("HTTP 400: bad_data"), "{dom}");

    // With a token: the page loads without it, and the API's refusal is shown.
    let token_dir = tmp.path().join("data-token");
    let secured = start_server(
        &rt,
        &token_dir,
        Config {
            auth_token: Some("s3cret".into()),
            ..Config::default()
        },
    );
    let dom = dump_dom(
        &chromium,
        &page_url(secured.addr, &[("expr", "up")]),
        tmp.path(),
        deadline,
    );
    assert!(dom.contains(r#"data-state="error""#), "{dom}");
    assert!(dom.contains("HTTP 401"), "{dom}");
    assert!(dom.contains("set the bearer token"), "{dom}");

    eprintln!("ui test: 4 browser runs in {:?}", began.elapsed());
}

#[test]
fn page_and_assets_are_served_without_the_token_with_a_strict_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut opts = Config::default().tsdb_options();
    opts.background = false;
    let config = Config {
        auth_token: Some("s3cret".into()),
        ..Config::default()
    };
    let tsdb = Tsdb::open(tmp.path(), opts).unwrap();
    let app = router(Arc::new(AppState::new(tsdb, config)));
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    for (uri, ty) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/chart.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let resp = rt.block_on(app.clone().oneshot(get(uri))).unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let h = resp.headers();
        let ct = h[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with(ty), "{uri}: {ct}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{uri}: {csp}");
    }
    // The API behind it still wants the token.
    let (status, _) = send(&rt, &app, get("/api/v1/query?query=up"));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, html) = send(&rt, &app, get("/"));
    assert!(html.contains(r#"src="/ui/app.js""#));
}
