//! The map from R and F (and optionally M) scores to named customer groups.
//! It is data: a small text format that callers can replace, with the
//! standard 5-point map as the default.

use std::fmt;
use std::ops::RangeInclusive;

/// One named group: the score ranges it covers. The first rule that
/// matches a customer wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentRule {
    pub name: String,
    pub r: RangeInclusive<i64>,
    pub f: RangeInclusive<i64>,
    pub m: Option<RangeInclusive<i64>>,
}

/// An ordered list of rules over scores `1..=scale`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentMap {
    scale: i64,
    rules: Vec<SegmentRule>,
}

/// The standard map on the R x F grid of 5-point scores: recent, frequent
/// customers are Champions; once-frequent customers who stopped buying are
/// At Risk or Can't Lose; the oldest, rarest are Lost.
pub const STANDARD_MAP: &str = "\
# name               recency  frequency
scale 5
Champions:           r 5,     f 4-5
Loyal:               r 3-4,   f 4-5
Potential Loyalist:  r 4-5,   f 2-3
New:                 r 5,     f 1
Promising:           r 4,     f 1
Need Attention:      r 3,     f 3
About to Sleep:      r 3,     f 1-2
Can't Lose:          r 1-2,   f 5
At Risk:             r 1-2,   f 3-4
Hibernating:         r 2,     f 1-2
Lost:                r 1,     f 1-2
";

impl Default for SegmentMap {
    fn default() -> Self {
        Self::standard()
    }
}

impl SegmentMap {
    /// The standard map, [`STANDARD_MAP`].
    pub fn standard() -> Self {
        // The built-in text is tested to parse; fall back to an empty map
        // rather than panic should that ever change.
        Self::parse(STANDARD_MAP).unwrap_or(Self {
            scale: 5,
            rules: Vec::new(),
        })
    }

    /// Parses the text format: `#` comments, an optional `scale N` line
    /// (default 5), then one `Name: r A-B, f C-D[, m E-F]` line per group,
    /// where a range may be a single score.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut scale = 5;
        let mut rules = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("scale ") {
                scale = rest
                    .trim()
                    .parse()
                    .ok()
                    .filter(|s| (2..=10).contains(s))
                    .ok_or_else(|| {
                        format!("line {line_no}: scale must be a number from 2 to 10")
                    })?;
                continue;
            }
            let (name, ranges) = line
                .split_once(':')
                .ok_or_else(|| format!("line {line_no}: expected `Name: r A-B, f C-D`"))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("line {line_no}: the group has no name"));
            }
            let (mut r, mut f, mut m) = (None, None, None);
            for part in ranges.split(',') {
                let part = part.trim();
                let (key, range) = part.split_once(' ').ok_or_else(|| {
                    format!("line {line_no}: expected `r A-B`, `f A-B` or `m A-B`, got `{part}`")
                })?;
                let range = parse_range(range.trim())
                    .ok_or_else(|| format!("line {line_no}: `{range}` is not a range like 4-5"))?;
                let slot = match key {
                    "r" => &mut r,
                    "f" => &mut f,
                    "m" => &mut m,
                    _ => {
                        return Err(format!(
                            "line {line_no}: unknown score `{key}`; use r, f or m"
                        ));
                    }
                };
                *slot = Some(range);
            }
            let (Some(r), Some(f)) = (r, f) else {
                return Err(format!(
                    "line {line_no}: `{name}` needs both an r and an f range"
                ));
            };
            rules.push(SegmentRule {
                name: name.to_string(),
                r,
                f,
                m,
            });
        }
        for rule in &rules {
            for range in [Some(&rule.r), Some(&rule.f), rule.m.as_ref()]
                .into_iter()
                .flatten()
            {
                if *range.start() < 1 || *range.end() > scale {
                    return Err(format!(
                        "`{}`: range {}-{} is outside the scale 1-{scale}",
                        rule.name,
                        range.start(),
                        range.end()
                    ));
                }
            }
        }
        if rules.is_empty() {
            return Err("the map has no groups".to_string());
        }
        Ok(Self { scale, rules })
    }

    /// The highest score the map is written for.
    pub fn scale(&self) -> i64 {
        self.scale
    }

    pub fn rules(&self) -> &[SegmentRule] {
        &self.rules
    }

    /// The group of a customer, or `None` when no rule covers the scores.
    /// The group of every combination of scores in `1..=scale`, r, then f
    /// (then m, `with_m`) from 1 to the scale: the combination (r, f, m)
    /// at `((r - 1) * scale + f - 1) * scale + m - 1`, as [`Self::lookup`]
    /// gives it.
    pub fn groups(&self, with_m: bool) -> Vec<Option<&str>> {
        let scale = self.scale;
        let scores = 1..=scale;
        let mut groups = Vec::new();
        for r in scores.clone() {
            for f in scores.clone() {
                if with_m {
                    groups.extend(scores.clone().map(|m| self.lookup(r, f, Some(m))));
                } else {
                    groups.push(self.lookup(r, f, None));
                }
            }
        }
        groups
    }

    pub fn lookup(&self, r: i64, f: i64, m: Option<i64>) -> Option<&str> {
        self.rules
            .iter()
            .find(|rule| {
                rule.r.contains(&r)
                    && rule.f.contains(&f)
                    && match (&rule.m, m) {
                        (Some(range), Some(m)) => range.contains(&m),
                        (Some(_), None) => false,
                        (None, _) => true,
                    }
            })
            .map(|rule| rule.name.as_str())
    }
}

fn parse_range(text: &str) -> Option<RangeInclusive<i64>> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some(a..=b)
}

impl fmt::Display for SegmentMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scale {}", self.scale)?;
        for rule in &self.rules {
            write!(
                f,
                "{}: r {}-{}, f {}-{}",
                rule.name,
                rule.r.start(),
                rule.r.end(),
                rule.f.start(),
                rule.f.end()
            )?;
            if let Some(m) = &rule.m {
                write!(f, ", m {}-{}", m.start(), m.end())?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_map_covers_every_cell_once() {
        let map = SegmentMap::parse(STANDARD_MAP).unwrap_or_else(|e| SegmentMap {
            scale: 0,
            rules: vec![SegmentRule {
                name: e,
                r: 0..=0,
                f: 0..=0,
                m: None,
            }],
        });
        assert_eq!(map.scale(), 5);
        assert_eq!(map.rules().len(), 11);
        for r in 1..=5 {
            for f in 1..=5 {
                let hits = map
                    .rules()
                    .iter()
                    .filter(|rule| rule.r.contains(&r) && rule.f.contains(&f))
                    .count();
                assert_eq!(hits, 1, "cell r={r} f={f}");
            }
        }
        assert_eq!(map.lookup(5, 5, None), Some("Champions"));
        assert_eq!(map.lookup(1, 1, Some(5)), Some("Lost"));
        assert_eq!(map.lookup(2, 5, None), Some("Can't Lose"));
        assert_eq!(map.lookup(4, 1, None), Some("Promising"));
    }

    #[test]
    fn groups_are_the_lookups_of_every_combination() {
        let map = SegmentMap::parse("scale 3\nBest: r 3, f 3, m 3\nLow: r 1, f 1-2").unwrap();
        let groups = map.groups(true);
        assert_eq!(groups.len(), 27);
        for (r, f, m) in
            (1..=3).flat_map(|r| (1..=3).flat_map(move |f| (1..=3).map(move |m| (r, f, m))))
        {
            let place = (((r - 1) * 3 + f - 1) * 3 + m - 1) as usize;
            assert_eq!(groups[place], map.lookup(r, f, Some(m)), "{r} {f} {m}");
        }
        assert_eq!(groups[26], Some("Best"));
        assert_eq!(groups[25], None);
        let groups = map.groups(false);
        assert_eq!(groups.len(), 9);
        assert_eq!(
            groups,
            vec![
                Some("Low"),
                Some("Low"),
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        let standard = SegmentMap::standard();
        let groups = standard.groups(false);
        assert_eq!(groups[4 * 5 + 4], Some("Champions"));
        assert_eq!(groups[5 - 1], Some("Can't Lose"));
    }

    #[test]
    fn custom_maps_and_their_errors() {
        let map = SegmentMap::parse("scale 3\nBest: r 3, f 3, m 3\nRest: r 1-3, f 1-3");
        let Ok(map) = map else {
            panic!("valid map rejected: {map:?}");
        };
        assert_eq!(map.lookup(3, 3, Some(3)), Some("Best"));
        assert_eq!(map.lookup(3, 3, Some(2)), Some("Rest"));
        assert_eq!(map.lookup(3, 3, None), Some("Rest"));
        assert_eq!(
            SegmentMap::parse("A: r 1-6, f 1").err(),
            Some("`A`: range 1-6 is outside the scale 1-5".into())
        );
        assert_eq!(
            SegmentMap::parse("A: r 1").err(),
            Some("line 1: `A` needs both an r and an f range".into())
        );
        assert_eq!(
            SegmentMap::parse("A: x 1, f 2").err(),
            Some("line 1: unknown score `x`; use r, f or m".into())
        );
        assert_eq!(
            SegmentMap::parse("# nothing").err(),
            Some("the map has no groups".into())
        );
        let round_trip = SegmentMap::parse(&map.to_string());
        assert_eq!(round_trip.ok(), Some(map));
    }
}
