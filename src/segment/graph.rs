//! Which segments refer to which: one graph, built once from the parsed
//! definitions, that answers every question about their dependencies:
//! would a definition close a cycle (and along which path), in what order
//! must segments be evaluated or created, and who uses a segment.

use std::collections::{BTreeMap, BTreeSet};

use crate::lang::ast::{Condition, Positional};

/// The segment codes a condition refers to with `in_segment(code)`.
pub fn references(condition: &Condition) -> BTreeSet<String> {
    fn walk(condition: &Condition, out: &mut BTreeSet<String>) {
        match condition {
            Condition::And(parts) | Condition::Or(parts) => {
                parts.iter().for_each(|p| walk(p, out));
            }
            Condition::Not(inner) => walk(inner, out),
            Condition::Call {
                function,
                positional,
                ..
            } if function.name.eq_ignore_ascii_case("in_segment") => {
                out.extend(positional.iter().filter_map(|p| match p {
                    Positional::Name(name) => Some(name.name.clone()),
                    Positional::Text(_) => None,
                }));
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(condition, &mut out);
    out
}

/// The references of condition text; text that does not parse refers to
/// nothing (planning it reports the syntax error).
pub fn text_references(text: &str) -> BTreeSet<String> {
    crate::lang::parse(text)
        .map(|c| references(&c))
        .unwrap_or_default()
}

/// Segments and the segments their conditions refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentGraph {
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl SegmentGraph {
    /// The graph of `definitions` (code, condition text), each parsed once.
    pub fn new<'a>(definitions: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            edges: definitions
                .into_iter()
                .map(|(code, text)| (code.to_string(), text_references(text)))
                .collect(),
        }
    }

    /// The codes in the graph, in order.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.edges.keys().map(String::as_str)
    }

    /// The segments `code` refers to directly.
    pub fn references_of(&self, code: &str) -> Option<&BTreeSet<String>> {
        self.edges.get(code)
    }

    /// The graph with `code` (re)defined as `condition`.
    pub fn with(mut self, code: &str, condition: &str) -> Self {
        self.edges
            .insert(code.to_string(), text_references(condition));
        self
    }

    /// The graph without `code`.
    pub fn without(mut self, code: &str) -> Self {
        self.edges.remove(code);
        self
    }

    /// A path `code -> ... -> code` if `code`'s references lead back to it.
    pub fn cycle_through(&self, code: &str) -> Option<Vec<String>> {
        fn visit(
            graph: &SegmentGraph,
            at: &str,
            start: &str,
            path: &mut Vec<String>,
            seen: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if at == start {
                let mut cycle = path.clone();
                cycle.push(at.to_string());
                return Some(cycle);
            }
            if !seen.insert(at.to_string()) {
                return None;
            }
            path.push(at.to_string());
            for next in graph.edges.get(at).into_iter().flatten() {
                if let Some(cycle) = visit(graph, next, start, path, seen) {
                    return Some(cycle);
                }
            }
            path.pop();
            None
        }
        let mut seen = BTreeSet::new();
        for next in self.edges.get(code).into_iter().flatten() {
            let mut path = vec![code.to_string()];
            if let Some(cycle) = visit(self, next, code, &mut path, &mut seen) {
                return Some(cycle);
            }
        }
        None
    }

    /// `codes` ordered so that a segment comes after the segments among
    /// `codes` that it refers to; otherwise in the order given. (A segment
    /// outside `codes` keeps its members, so what lies behind it does not
    /// order the others.) Cycles, refused when defined, do not loop.
    pub fn order<'a>(&self, codes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let codes: Vec<&str> = codes.into_iter().collect();
        let wanted: BTreeSet<&str> = codes.iter().copied().collect();
        let mut placed = BTreeSet::new();
        let mut visiting = BTreeSet::new();
        let mut done = Vec::new();
        fn place(
            graph: &SegmentGraph,
            code: &str,
            wanted: &BTreeSet<&str>,
            placed: &mut BTreeSet<String>,
            visiting: &mut BTreeSet<String>,
            done: &mut Vec<String>,
        ) {
            if placed.contains(code) || !visiting.insert(code.to_string()) {
                return;
            }
            for dependency in graph.edges.get(code).into_iter().flatten() {
                if wanted.contains(dependency.as_str()) {
                    place(graph, dependency, wanted, placed, visiting, done);
                }
            }
            if placed.insert(code.to_string()) {
                done.push(code.to_string());
            }
        }
        for code in codes {
            place(self, code, &wanted, &mut placed, &mut visiting, &mut done);
        }
        done
    }

    /// The stage of each of `ordered` (codes as [`order`](Self::order)
    /// returns them): 0 for a segment that refers to none of the segments
    /// before it, else one more than the latest stage among those it refers
    /// to. Segments of one stage do not depend on each other, so they can
    /// be evaluated together once the earlier stages are done.
    pub fn stages(&self, ordered: &[String]) -> Vec<usize> {
        let mut stages: BTreeMap<&str, usize> = BTreeMap::new();
        ordered
            .iter()
            .map(|code| {
                let stage = self
                    .edges
                    .get(code)
                    .into_iter()
                    .flatten()
                    .filter_map(|dependency| stages.get(dependency.as_str()).map(|s| s + 1))
                    .max()
                    .unwrap_or(0);
                stages.insert(code, stage);
                stage
            })
            .collect()
    }

    /// Every segment of the graph, referenced ones first: the order to
    /// create them in.
    pub fn creation_order(&self) -> Vec<String> {
        self.order(self.codes())
    }

    /// The segments other than `code` whose conditions refer to it.
    pub fn users_of(&self, code: &str) -> Vec<&str> {
        self.edges
            .iter()
            .filter(|(c, refs)| c.as_str() != code && refs.contains(code))
            .map(|(c, _)| c.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(definitions: &[(&str, &str)]) -> SegmentGraph {
        SegmentGraph::new(definitions.iter().copied())
    }

    #[test]
    fn references_are_read_from_the_syntax_tree() {
        assert_eq!(
            text_references("in_segment(a) OR NOT (in_segment(b) AND x = 'in_segment(c)')"),
            ["a", "b"].into_iter().map(String::from).collect()
        );
        assert!(text_references("in_segment(").is_empty());
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let g = graph(&[
            ("a", "in_segment(b)"),
            ("b", "country = 'x' OR in_segment(c)"),
            ("c", "city = 'y'"),
        ]);
        assert_eq!(g.cycle_through("a"), None);
        let g = g.with("c", "in_segment(a)");
        assert_eq!(
            g.cycle_through("c"),
            Some(vec!["c".into(), "a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            graph(&[("s", "in_segment(s)")]).cycle_through("s"),
            Some(vec!["s".into(), "s".into()])
        );
        // A reference to an unknown segment is not a cycle.
        assert_eq!(graph(&[("a", "in_segment(zz)")]).cycle_through("a"), None);
    }

    #[test]
    fn referenced_segments_come_first() {
        let g = graph(&[
            ("a", "in_segment(b)"),
            ("b", "in_segment(c)"),
            ("c", "country = 'x'"),
            ("d", "city = 'y'"),
        ]);
        assert_eq!(g.creation_order(), ["c", "b", "a", "d"]);
        // Only the codes asked for, their direct dependencies first.
        assert_eq!(g.order(["c", "b", "a"]), ["c", "b", "a"]);
        assert_eq!(g.order(["a", "b"]), ["b", "a"]);
        assert_eq!(g.order(["a", "c"]), ["a", "c"]);
        assert_eq!(g.order(["d", "b"]), ["d", "b"]);
        assert_eq!(g.users_of("c"), ["b"]);
        assert!(g.users_of("a").is_empty());
    }

    #[test]
    fn stages_group_segments_that_do_not_depend_on_each_other() {
        let g = graph(&[
            ("a", "in_segment(b) AND in_segment(d)"),
            ("b", "in_segment(c)"),
            ("c", "country = 'x'"),
            ("d", "city = 'y'"),
            ("e", "in_segment(d) OR in_segment(zz)"),
        ]);
        let order = g.creation_order();
        assert_eq!(order, ["c", "b", "d", "a", "e"]);
        assert_eq!(g.stages(&order), [0, 1, 0, 2, 1]);
        // A segment outside the codes refreshed does not hold others back.
        let order = g.order(["a", "c", "d"]);
        assert_eq!(order, ["d", "a", "c"]);
        assert_eq!(g.stages(&order), [0, 1, 0]);
        // A cycle (refused when defined) does not loop.
        let g = graph(&[("a", "in_segment(b)"), ("b", "in_segment(a)")]);
        assert_eq!(g.stages(&g.creation_order()), [0, 1]);
    }

    #[test]
    fn cycles_do_not_loop_the_order() {
        let g = graph(&[("a", "in_segment(b)"), ("b", "in_segment(a)")]);
        assert_eq!(g.creation_order(), ["b", "a"]);
        assert_eq!(g.without("b").creation_order(), ["a"]);
    }
}
