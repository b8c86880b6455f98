//! Project-file and table-path mistakes, and the path forms that work: each
//! test writes a project file (and data) into a temporary folder.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use crate::{assert_fails, assert_ok, repo_root, segql_in};

/// A temporary project folder holding `segql.toml` with `text`.
fn project(text: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("segql.toml"), text).unwrap();
    dir
}

/// Copies the bundled orders table to `dir/name`.
fn copy_orders(dir: &Path, name: &str) {
    let target = dir.join(name);
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::copy(
        repo_root().join("data/online_retail/orders.parquet"),
        target,
    )
    .unwrap();
}

const COUNT: &str = "SELECT count(*) AS n FROM orders";

/// Runs `COUNT` as CSV with the project's `segql.toml` named explicitly.
fn count(dir: &TempDir) -> crate::Run {
    segql_in(
        dir.path(),
        &["--config", "segql.toml", "--format", "csv", "-c", COUNT],
    )
}

#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails(
        &segql_in(dir.path(), &["--config", "nope.toml", "-c", "SELECT 1"]),
        1,
        "error: project file nope.toml not found; pass an existing file to --config, or leave \
         --config out to use ./segql.toml when it exists\n",
    );
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let dir = project("# tables\n[tables]\norders = \"orders.parquet\ncustomers = \"c.parquet\"\n");
    assert_fails(
        &count(&dir),
        1,
        "error: project file segql.toml, line 3, column 25: invalid basic string, expected `\"`; \
         a project file has a [tables] section mapping table names to Parquet paths, e.g. \
         orders = \"data/orders.parquet\", and an optional [segments] section with the folder \
         of saved segments, e.g. folder = \"segments\", and an optional [store] section with the segment store's folder, e.g. folder = \"segql_store\"\n",
    );
}

#[test]
fn syntax_error_in_the_default_project_file() {
    // Without --config, ./segql.toml is read, and its mistakes are errors.
    let dir = project("[tables\n");
    let run = segql_in(dir.path(), &["-c", "SELECT 1"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with("error: project file segql.toml, line 1, column "),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_section_is_an_error() {
    let dir = project("[tabels]\norders = \"orders.parquet\"\n");
    assert_fails(
        &count(&dir),
        1,
        "error: project file segql.toml, line 1, column 2: unknown field `tabels`, expected \
         one of `tables`, `segments`, `columns`, `purchases`, `time`, `storage`, `rfm`, `store`, `server`, `cluster`; a project file has a [tables] section mapping table names to \
         Parquet paths, e.g. orders = \"data/orders.parquet\", and an optional [segments] \
         section with the folder of saved segments, e.g. folder = \"segments\", and an optional [store] section with the segment store's folder, e.g. folder = \"segql_store\"\n",
    );
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let dir = project("timezone = \"UTC\"\n[tables]\norders = \"o.parquet\"\n");
    assert_fails(
        &count(&dir),
        1,
        "error: project file segql.toml, line 1, column 1: unknown field `timezone`, expected \
         one of `tables`, `segments`, `columns`, `purchases`, `time`, `storage`, `rfm`, `store`, `server`, `cluster`; a project file has a [tables] section mapping table names to \
         Parquet paths, e.g. orders = \"data/orders.parquet\", and an optional [segments] \
         section with the folder of saved segments, e.g. folder = \"segments\", and an optional [store] section with the segment store's folder, e.g. folder = \"segql_store\"\n",
    );
}

#[test]
fn table_path_must_be_a_string() {
    let dir = project("[tables]\norders = 3\n");
    assert_fails(
        &count(&dir),
        1,
        "error: project file segql.toml, line 2, column 10: invalid type: integer `3`, expected \
         a string; a project file has a [tables] section mapping table names to Parquet paths, \
         e.g. orders = \"data/orders.parquet\", and an optional [segments] section with the \
         folder of saved segments, e.g. folder = \"segments\", and an optional [store] section with the segment store's folder, e.g. folder = \"segql_store\"\n",
    );
}

#[test]
fn invalid_table_name() {
    let dir = project("[tables]\n\"order-items\" = \"items.parquet\"\n");
    assert_fails(
        &count(&dir),
        1,
        "error: project file segql.toml: `order-items` is not a valid table name; table names \
         start with a letter or `_` and contain only letters, digits and `_` (rename the key \
         under [tables])\n",
    );
}

#[test]
fn empty_table_path() {
    let dir = project("[tables]\norders = \"\"\n");
    assert_fails(
        &count(&dir),
        1,
        "error: project file segql.toml: table `orders` has an empty path; give a Parquet \
         file, a directory or a glob such as \"data/*.parquet\"\n",
    );
}

#[test]
fn table_path_that_does_not_exist() {
    let dir = project("[tables]\norders = \"data/ordres.parquet\"\n");
    assert_fails(
        &count(&dir),
        1,
        &format!(
            "error: table `orders`: no file or directory at {}/data/ordres.parquet (from \
             segql.toml); fix the path under [tables]\n",
            dir.path().display()
        ),
    );
}

#[test]
fn glob_that_matches_nothing() {
    let dir = project("[tables]\norders = \"data/*.parquet\"\n");
    fs::create_dir(dir.path().join("data")).unwrap();
    fs::write(dir.path().join("data/readme.txt"), "not parquet").unwrap();
    assert_fails(
        &count(&dir),
        1,
        &format!(
            "error: table `orders`: no Parquet file matches {}/data/*.parquet (from \
             segql.toml); fix the pattern under [tables] or add .parquet files\n",
            dir.path().display()
        ),
    );
}

#[test]
fn glob_whose_folder_is_missing() {
    let dir = project("[tables]\norders = \"nowhere/*.parquet\"\n");
    assert_fails(
        &count(&dir),
        1,
        &format!(
            "error: table `orders`: no Parquet file matches {}/nowhere/*.parquet (from \
             segql.toml); fix the pattern under [tables] or add .parquet files\n",
            dir.path().display()
        ),
    );
}

#[test]
fn glob_reads_every_matching_file() {
    let dir = project("[tables]\norders = \"data/part-*.parquet\"\n");
    copy_orders(dir.path(), "data/part-1.parquet");
    copy_orders(dir.path(), "data/part-2.parquet");
    copy_orders(dir.path(), "data/other.parquet");
    assert_ok(&count(&dir), "n\n51800\n");
}

#[test]
fn directory_reads_every_parquet_file() {
    let dir = project("[tables]\norders = \"data\"\n");
    copy_orders(dir.path(), "data/a.parquet");
    copy_orders(dir.path(), "data/b.parquet");
    assert_ok(&count(&dir), "n\n51800\n");
}

#[test]
fn directory_without_parquet_files() {
    let dir = project("[tables]\norders = \"data\"\n");
    fs::create_dir(dir.path().join("data")).unwrap();
    assert_fails(
        &count(&dir),
        1,
        &format!(
            "error: table `orders`: no Parquet file (*.parquet) in directory {}/data (from \
             segql.toml); add .parquet files or fix the path under [tables]\n",
            dir.path().display()
        ),
    );
}

#[test]
fn relative_paths_resolve_against_the_project_folder() {
    // The project file lives in `proj/`, its data in `../shared/`, and segql
    // runs from a third folder.
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("proj")).unwrap();
    fs::create_dir(root.path().join("elsewhere")).unwrap();
    copy_orders(root.path(), "shared/orders.parquet");
    fs::write(
        root.path().join("proj/segql.toml"),
        "[tables]\norders = \"../shared/./orders.parquet\"\n",
    )
    .unwrap();
    let run = segql_in(
        &root.path().join("elsewhere"),
        &[
            "--config",
            "../proj/segql.toml",
            "--format",
            "csv",
            "-c",
            COUNT,
        ],
    );
    assert_ok(&run, "n\n25900\n");
}

#[test]
fn corrupt_parquet_file() {
    let dir = project("[tables]\norders = \"x.parquet\"\n");
    fs::write(dir.path().join("x.parquet"), b"garbage!".repeat(8)).unwrap();
    assert_fails(
        &count(&dir),
        1,
        &format!(
            "error: table `orders`: cannot read {}/x.parquet (from segql.toml): Parquet error: \
             Invalid Parquet file. Corrupt footer; check that the path holds valid Parquet \
             files\n",
            dir.path().display()
        ),
    );
}

#[test]
fn file_that_is_not_parquet() {
    let dir = project("[tables]\norders = \"orders.csv\"\n");
    fs::write(dir.path().join("orders.csv"), "a,b\n1,2\n").unwrap();
    assert_fails(
        &count(&dir),
        1,
        &format!(
            "error: table `orders`: {}/orders.csv is not a .parquet file (from segql.toml); \
             segql reads Parquet: point the path at a .parquet file, a directory of them or a \
             glob\n",
            dir.path().display()
        ),
    );
}

#[test]
fn url_without_an_object_store() {
    let dir = project("[tables]\norders = \"ftp://files.example/orders/\"\n");
    assert_fails(
        &count(&dir),
        1,
        "error: table `orders`: no object store is set up for ftp://files.example/orders/ (from \
         segql.toml); segql reads local paths, file://, s3://, gs://, az:// (abfs://) and \
         http(s):// URLs, so copy the data locally or register an object store for `ftp://` on \
         the session\n",
    );
    // A [storage] option no store knows is named.
    let dir =
        project("[tables]\norders = \"s3://bucket/orders/\"\n[storage]\nendpont = \"http://x\"\n");
    assert_fails(
        &count(&dir),
        1,
        "error: table `orders`: s3://bucket/orders/ (from segql.toml): [storage] endpont is not \
         an option of the S3 object store; see object_store's configuration keys (for S3: \
         endpoint, region, access_key_id, secret_access_key, session_token, allow_http, ...)\n",
    );
}

#[test]
fn file_url_passes_through() {
    let data = tempfile::tempdir().unwrap();
    copy_orders(data.path(), "orders.parquet");
    let dir = project(&format!(
        "[tables]\norders = \"file://{}/orders.parquet\"\n",
        data.path().display()
    ));
    assert_ok(&count(&dir), "n\n25900\n");
}

#[test]
fn empty_project_file_has_no_tables() {
    let dir = project("# nothing yet\n");
    assert_ok(
        &segql_in(
            dir.path(),
            &[
                "--config",
                "segql.toml",
                "--format",
                "csv",
                "-c",
                "SELECT 1 AS one",
            ],
        ),
        "one\n1\n",
    );
}

#[test]
fn segments_folder_mistakes() {
    let dir = project("[tables]\n[segments]\nfolder = \"segs\"\n");
    let run = count(&dir);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with("error: cannot read the segments folder ")
            && run
                .stderr
                .ends_with("; fix [segments] folder in the project file\n"),
        "{}",
        run.stderr
    );

    fs::create_dir(dir.path().join("segs")).unwrap();
    fs::write(dir.path().join("segs/Big-Spenders.seg"), "orders_count > 1").unwrap();
    let run = count(&dir);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains(
            "`Big-Spenders` is not a valid segment code; name it with lower-case letters, \
             digits and _ (starting with a letter)"
        ),
        "{}",
        run.stderr
    );

    // A valid folder is read; other files in it are ignored.
    fs::remove_file(dir.path().join("segs/Big-Spenders.seg")).unwrap();
    fs::write(dir.path().join("segs/big_spenders.seg"), "orders_count > 1").unwrap();
    fs::write(dir.path().join("segs/notes.txt"), "not a segment").unwrap();
    copy_orders(dir.path(), "orders.parquet");
    let run = segql_in(
        dir.path(),
        &[
            "--config",
            "segql.toml",
            "--format",
            "csv",
            "-c",
            "SELECT 1 AS one",
        ],
    );
    crate::assert_ok(&run, "one\n1\n");
}
