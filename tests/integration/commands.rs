//! The `rfm` and `init` subcommands.

use std::fs;

use crate::{assert_fails, assert_ok, segql, segql_in};

#[test]
fn rfm_grid_in_the_terminal_and_as_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("grid.svg");
    let png = dir.path().join("grid.png");
    let run = segql(&[
        "rfm",
        "--as-of",
        "2011-12-10",
        "--svg",
        svg.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert_eq!(run.stderr, "");
    assert_eq!(run.code, Some(0));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "R x F grid as of 2011-12-10 (rows: recency score, 5 = most recent; columns: frequency score)"
    );
    assert_eq!(lines.len(), 10, "{}", run.stdout);
    // The cells hold every purchasing customer once.
    let total: i64 = lines[2..7]
        .iter()
        .flat_map(|line| line.split('|').skip(1))
        .map(|cell| {
            let cell = cell
                .trim()
                .trim_matches(|c: char| "░▒▓█".contains(c))
                .trim();
            cell.split_whitespace()
                .next()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 4339);
    assert_eq!(lines[8], format!("heat map written to {}", svg.display()));
    let svg = fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg width=\"780\" height=\"650\""),
        "{svg}"
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    for text in [
        ">\nR x F grid as of 2011-12-10\n</text>",
        ">\nFrequency score (F)\n</text>",
        ">\nRecency score (R)\n</text>",
        // The fullest cell, and the legend's top value.
        ">\n625\n</text>",
    ] {
        assert!(svg.contains(text), "{text} missing from {svg}");
    }
    // The fullest cell in the darkest blue, once (the legend's top step is
    // a shade lighter).
    assert_eq!(svg.matches("fill=\"#08306B\"").count(), 1);
    assert_eq!(lines[9], format!("heat map written to {}", png.display()));
    // 25 shaded cells of about 100 x 100 pixels cover most of the image.
    let (width, height, inked) = crate::png_summary(&png);
    assert_eq!((width, height), (780, 650));
    assert!(inked > 25 * 100 * 100, "{inked}");
}

#[test]
fn init_writes_a_project_file_once() {
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&segql_in(dir.path(), &["init"]), "");
    let text = fs::read_to_string(dir.path().join("segql.toml")).unwrap();
    assert!(text.starts_with("# segql project file."));
    assert!(text.contains("[tables]\norders = \"data/orders.parquet\""));
    assert_fails(
        &segql_in(dir.path(), &["init"]),
        1,
        "error: segql.toml already exists; pass --force to replace it\n",
    );
    fs::write(dir.path().join("segql.toml"), "broken").unwrap();
    assert_ok(&segql_in(dir.path(), &["init", "--force"]), "");
    assert!(
        fs::read_to_string(dir.path().join("segql.toml"))
            .unwrap()
            .starts_with("# segql")
    );
    assert_ok(&segql_in(dir.path(), &["init", "other.toml"]), "");
    assert!(dir.path().join("other.toml").exists());
}

/// `segql demo` on the bundled data: its report is compared with
/// `demo/demo.out` (rewrite with SEGQL_UPDATE_SNAPSHOTS=1), and its
/// charts and store are real.
/// The whole demo (RFM, saved segments, a year of refreshes, charts) under
/// a 64 MiB memory pool: sorts, joins and aggregations spill, and the
/// output is the same as without a limit.
#[test]
fn demo_runs_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::repo_root().join("segql.toml");
    let run = segql_in(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--memory-limit",
            "64M",
            "demo",
            "--out",
            "out",
        ],
    );
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""));
    let snapshot = crate::repo_root().join("tests/integration/demo/demo.out");
    assert_eq!(run.stdout, fs::read_to_string(&snapshot).unwrap());
}

#[test]
fn demo_runs_the_main_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::repo_root().join("segql.toml");
    let run = segql_in(
        dir.path(),
        &["--config", config.to_str().unwrap(), "demo", "--out", "out"],
    );
    assert_eq!(run.stderr, "");
    assert_eq!(run.code, Some(0));
    let snapshot = crate::repo_root().join("tests/integration/demo/demo.out");
    if std::env::var_os("SEGQL_UPDATE_SNAPSHOTS").is_some() {
        fs::write(&snapshot, &run.stdout).unwrap();
    }
    assert_eq!(run.stdout, fs::read_to_string(&snapshot).unwrap());
    let out = dir.path().join("out");
    let (width, height, inked) = crate::png_summary(&out.join("rfm.png"));
    assert_eq!((width, height), (780, 650));
    assert!(inked > 25 * 100 * 100);
    let (width, height, inked) = crate::png_summary(&out.join("tea_never_coffee.png"));
    assert_eq!((width, height), (760, 420));
    assert!(inked > 2000);
    let svg = fs::read_to_string(out.join("tea_never_coffee.svg")).unwrap();
    assert!(svg.contains(">\nSize of segment tea_never_coffee\n</text>"));
    assert!(svg.contains(">\n2011-01-01\n</text>"), "{svg}");
    assert!(svg.contains("<polyline fill=\"none\" opacity=\"1\" stroke=\"#08306B\""));
    // The store it left is a normal store, readable with SQL.
    let data = crate::repo_root().join("data/online_retail");
    fs::write(
        dir.path().join("segql.toml"),
        format!(
            "[tables]\ncustomers = \"{}/customers.parquet\"\n[store]\nfolder = \"out/segql_store\"\n",
            data.display()
        ),
    )
    .unwrap();
    assert_ok(
        &segql_in(
            dir.path(),
            &[
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS refreshes FROM segment_refreshes WHERE kind = 'refresh'",
            ],
        ),
        "refreshes\n13\n",
    );
}
