//! Every example in `queries/` runs against the bundled data and prints
//! exactly its snapshot, `tests/integration/snapshots/<name>.out`.
//!
//! After a deliberate change, rewrite the snapshots with
//! `SEGQL_UPDATE_SNAPSHOTS=1 cargo test --test integration queries` and
//! review the diff.

use std::fs;
use std::path::PathBuf;

use crate::{repo_root, segql};

fn snapshot_dir() -> PathBuf {
    repo_root().join("tests/integration/snapshots")
}

/// `queries/*.sql`, sorted, as paths relative to the repository root.
fn query_files() -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(repo_root().join("queries"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| format!("queries/{name}"))
        .collect();
    files.sort();
    files
}

fn snapshot_path(query: &str) -> PathBuf {
    let stem = query
        .trim_start_matches("queries/")
        .trim_end_matches(".sql");
    snapshot_dir().join(format!("{stem}.out"))
}

#[test]
fn examples_match_their_snapshots() {
    let update = std::env::var_os("SEGQL_UPDATE_SNAPSHOTS").is_some();
    let files = query_files();
    assert!(!files.is_empty(), "no queries/*.sql found");
    let mut mismatches = Vec::new();
    for file in &files {
        let run = segql(&["-f", file]);
        assert_eq!(run.stderr, "", "{file} failed");
        assert_eq!(run.code, Some(0), "{file} failed");
        let path = snapshot_path(file);
        if update {
            fs::create_dir_all(snapshot_dir()).unwrap();
            fs::write(&path, &run.stdout).unwrap();
            continue;
        }
        match fs::read_to_string(&path) {
            Ok(expected) if expected == run.stdout => {}
            Ok(expected) => mismatches.push(format!(
                "{file}: output differs from {}\n--- expected\n{expected}--- actual\n{}",
                path.display(),
                run.stdout
            )),
            Err(_) => mismatches.push(format!(
                "{file}: no snapshot at {} (run with SEGQL_UPDATE_SNAPSHOTS=1 to write it)",
                path.display()
            )),
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_snapshot_has_its_query() {
    let Ok(entries) = fs::read_dir(snapshot_dir()) else {
        return;
    };
    for entry in entries {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let stem = name.trim_end_matches(".out");
        // EXPLAIN SEGMENT's snapshots belong to `segments`.
        if stem.starts_with("explain_") {
            continue;
        }
        assert!(
            repo_root().join(format!("queries/{stem}.sql")).is_file(),
            "snapshot {name} has no queries/{stem}.sql; delete it"
        );
    }
}
