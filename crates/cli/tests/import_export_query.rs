//! `strata import`, `export` and `query` on a data directory, through the real binary.

fn strata(args: &[&str]) -> (bool, String, String) {
    strata_testkit::run(env!("CARGO_BIN_EXE_strata"), args)
}

#[test]
fn import_then_export_round_trips_and_query_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let om = dir.path().join("in.om");
    std::fs::write(
        &om,
        "# TYPE temp gauge\ntemp{city=\"Oslo\"} -3.5 1700000000\ntemp{city=\"Oslo\"} -3 1700000015.5\ntemp{city=\"Rome\",note=\"a \\\"q\\\"\"} 14 1700000000\n# EOF\n",
    )
    .unwrap();
    let (ok, out, err) = strata(&[
        "import",
        "--data-dir",
        data,
        "--format",
        "openmetrics",
        om.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 3 samples of 2 new series"), "{out}");

    let (ok, out, err) = strata(&["export", "--data-dir", data, "--match", "temp"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "temp{city=\"Oslo\"} -3.5 1700000000\ntemp{city=\"Oslo\"} -3 1700000015.500\ntemp{city=\"Rome\",note=\"a \\\"q\\\"\"} 14 1700000000\n# EOF\n"
    );
    // What export wrote imports again into another directory, identically.
    let again = dir.path().join("again");
    let exported = dir.path().join("out.om");
    std::fs::write(&exported, &out).unwrap();
    let (ok, _, err) = strata(&[
        "import",
        "--data-dir",
        again.to_str().unwrap(),
        "--format",
        "openmetrics",
        exported.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (_, out2, _) = strata(&[
        "export",
        "--data-dir",
        again.to_str().unwrap(),
        "--match",
        "temp",
    ]);
    assert_eq!(out, out2);

    let (ok, out, err) = strata(&[
        "query",
        "--data-dir",
        data,
        "max(temp)",
        "--time",
        "1700000020",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "14");
    let (ok, _, err) = strata(&["query", "--data-dir", data, "max(", "--time", "1700000020"]);
    assert!(!ok);
    assert!(err.contains("parse error"), "{err}");
}
