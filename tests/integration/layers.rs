//! The library's layering, checked on its source: no two files of `src/`
//! depend on each other, directly or through others. A file depends on
//! another when it names it with `crate::...` or `super::...` (in `use`
//! or in a path), which is how every module here refers to another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::repo_root;

/// Module path of a source file: `src/store/mod.rs` is `store`,
/// `src/store/read.rs` is `store::read`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_string();
    }
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The paths a file names after `crate::` or `super::`, as module paths
/// (unresolved: the longest known module prefix is chosen later). Braced
/// groups (`crate::a::{b, c::d}`) give one path per member.
fn named_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    for (start, keyword) in code
        .match_indices("crate::")
        .map(|(i, _)| (i, "crate"))
        .chain(code.match_indices("super::").map(|(i, _)| (i, "super")))
    {
        // Skip `segql_udfs::...crate::` and identifiers ending in `crate`.
        if code[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue;
        }
        let base: Vec<String> = if keyword == "crate" {
            Vec::new()
        } else {
            // The module's parent: for `a/b.rs` (module `a::b`) and for
            // `a/mod.rs` (module `a`) alike, one level up.
            let mut parent = module.to_vec();
            parent.pop();
            parent
        };
        let rest = &code[start + keyword.len() + 2..];
        expand(rest, &base, &mut out);
    }
    out
}

/// Reads `a::b::{c, d::e}` from the front of `rest`, prefixing `base`.
fn expand(rest: &str, base: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = base.to_vec();
    let mut chars = rest;
    loop {
        let len = chars
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(chars.len());
        if len == 0 {
            if let Some(inner) = chars.strip_prefix('{') {
                let end = matching_brace(inner);
                for member in split_top(&inner[..end]) {
                    expand(member.trim(), &path, out);
                }
                return;
            }
            break;
        }
        path.push(chars[..len].to_string());
        chars = &chars[len..];
        match chars.strip_prefix("::") {
            Some(next) => chars = next,
            None => break,
        }
    }
    out.push(path);
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut from) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[from..]);
    parts
}

/// Every file's dependencies on other files of `src/`.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = repo_root().join("src");
    let mut paths = Vec::new();
    files(&src, &mut paths);
    let mut modules: BTreeMap<Vec<String>, String> = BTreeMap::new();
    let mut texts = Vec::new();
    for path in &paths {
        let relative = path.strip_prefix(&src).unwrap();
        if relative == Path::new("main.rs") {
            continue;
        }
        let module = module_of(relative);
        let name = relative.display().to_string();
        modules.insert(module.clone(), name.clone());
        texts.push((module, name, std::fs::read_to_string(path).unwrap()));
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, name, text) in texts {
        let edges = graph.entry(name.clone()).or_default();
        for path in named_paths(&text, &module) {
            // The longest prefix of the path that is a file of src/.
            let target = (0..=path.len())
                .rev()
                .find_map(|n| modules.get(&path[..n]))
                .cloned();
            if let Some(target) = target
                && target != name
                && target != "lib.rs"
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A cycle of the graph, if it has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn the_reader_of_paths_follows_use_groups() {
    let paths = named_paths(
        "use crate::store::{Store, read::{self, sizes}};\nuse super::env::X; // crate::nope",
        &["statements".to_string(), "lifecycle".to_string()],
    );
    let paths: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "store::Store",
            "store::read::self",
            "store::read::sizes",
            "statements::env::X"
        ]
    );
}

#[test]
fn no_file_of_src_depends_on_itself_through_others() {
    let graph = dependencies();
    assert!(graph.len() > 30, "{} files", graph.len());
    // Some edges the layering rests on, so the check is known to see them.
    assert!(graph["refresh.rs"].contains("store/mod.rs"));
    assert!(graph["segment/planner.rs"].contains("segment/resolve.rs"));
    assert!(!graph["store/mod.rs"].contains("error.rs"));
    assert_eq!(find_cycle(&graph), None, "a cycle between files of src/");
}

#[test]
fn the_lower_layers_do_not_reach_up() {
    let graph = dependencies();
    let below = |file: &str, forbidden: &[&str]| {
        for dependency in &graph[file] {
            assert!(
                !forbidden.iter().any(|f| dependency.starts_with(f)),
                "{file} depends on {dependency}"
            );
        }
    };
    // The language knows nothing of DataFusion-side layers.
    for file in [
        "lang/lexer.rs",
        "lang/parser.rs",
        "lang/ast.rs",
        "lang/error.rs",
    ] {
        below(
            file,
            &[
                "segment",
                "store",
                "refresh",
                "statements",
                "project",
                "error.rs",
            ],
        );
    }
    // The segment layer does not know the store, statements or the project.
    for file in [
        "segment/resolve.rs",
        "segment/planner.rs",
        "segment/catalog.rs",
        "segment/graph.rs",
    ] {
        below(
            file,
            &[
                "store",
                "refresh",
                "statements",
                "project",
                "error.rs",
                "session",
            ],
        );
    }
    // The store returns domain values, never statement results.
    for file in ["store/mod.rs", "store/read.rs", "store/functions.rs"] {
        below(file, &["refresh", "statements", "project", "error.rs"]);
    }
    below("refresh.rs", &["statements", "project"]);
    for file in [
        "order_state.rs",
        "bought_state.rs",
        "events_state.rs",
        "state_folder.rs",
    ] {
        below(file, &["refresh", "statements", "project"]);
    }
    below("statements/mod.rs", &["project", "exec", "repl"]);
}
