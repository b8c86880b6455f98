//! SQL laid out for reading, from sqlparser's syntax tree: one clause per
//! line (SELECT, FROM, each JOIN with its ON, WHERE with one `AND` part per
//! line, GROUP BY, HAVING, ORDER BY, LIMIT), derived tables and `EXISTS` /
//! `IN` subqueries indented inside their parentheses. Expressions print as
//! sqlparser writes them, so the text means what the one-line SQL means.
//! A clause this layout does not know (a `WITH`, a `QUALIFY`, ...) is kept
//! on one line, as sqlparser writes it: every part is checked to read the
//! same as sqlparser's own text before it is split up.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Query, Select, SetExpr, Statement, TableFactor,
    TableWithJoins,
};

/// One level of indentation.
const INDENT: &str = "  ";

/// A SELECT list longer than this goes one item per line.
const LIST_WIDTH: usize = 80;

/// `statement` laid out over lines, without a final newline.
pub fn pretty(statement: &Statement) -> String {
    let mut layout = Layout::default();
    match statement {
        Statement::Query(query) => layout.query(query, 0),
        other => layout.line(0, other.to_string()),
    }
    layout.lines.join("\n")
}

#[derive(Default)]
struct Layout {
    lines: Vec<String>,
}

impl Layout {
    /// Starts a line at `depth`.
    fn line(&mut self, depth: usize, text: impl AsRef<str>) {
        self.lines
            .push(format!("{}{}", INDENT.repeat(depth), text.as_ref()));
    }

    /// Adds `text` to the end of the last line.
    fn append(&mut self, text: &str) {
        match self.lines.last_mut() {
            Some(last) => last.push_str(text),
            None => self.lines.push(text.to_string()),
        }
    }

    /// A query whose first line starts at `depth`.
    fn query(&mut self, query: &Query, depth: usize) {
        // (The unparser may leave an empty limit clause: it writes nothing.)
        let text_of = |part: String| Some(part).filter(|p| !p.trim().is_empty());
        let order_by = query.order_by.as_ref().and_then(|o| text_of(o.to_string()));
        let limit = query
            .limit_clause
            .as_ref()
            .and_then(|l| text_of(l.to_string()));
        let plain = format!(
            "{}{}{}",
            query.body,
            order_by
                .as_ref()
                .map(|o| format!(" {o}"))
                .unwrap_or_default(),
            limit.clone().unwrap_or_default()
        );
        if plain != query.to_string() {
            return self.line(depth, query.to_string());
        }
        self.set_expr(&query.body, depth);
        if let Some(order_by) = order_by {
            self.line(depth, order_by);
        }
        if let Some(limit) = limit {
            self.line(depth, limit.trim_start());
        }
    }

    fn set_expr(&mut self, body: &SetExpr, depth: usize) {
        match body {
            SetExpr::Select(select) => self.select(select, depth),
            SetExpr::Query(query) => {
                self.line(depth, "(");
                self.query(query, depth + 1);
                self.line(depth, ")");
            }
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let keyword = format!("{op} {set_quantifier}").trim_end().to_string();
                if format!("{left} {keyword} {right}") != body.to_string() {
                    return self.line(depth, body.to_string());
                }
                self.set_expr(left, depth);
                self.line(depth, keyword);
                self.set_expr(right, depth);
            }
            other => self.line(depth, other.to_string()),
        }
    }

    fn select(&mut self, select: &Select, depth: usize) {
        let distinct = select
            .distinct
            .as_ref()
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        let items: Vec<String> = select.projection.iter().map(ToString::to_string).collect();
        let group_by = match &select.group_by {
            GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            _ => return self.line(depth, select.to_string()),
        };
        // The select as sqlparser would write it from the parts laid out
        // here: if it reads otherwise, it has a part they miss.
        let mut plain = format!("SELECT{distinct} {}", items.join(", "));
        if !select.from.is_empty() {
            let from: Vec<String> = select.from.iter().map(ToString::to_string).collect();
            plain.push_str(&format!(" FROM {}", from.join(", ")));
        }
        if let Some(selection) = &select.selection {
            plain.push_str(&format!(" WHERE {selection}"));
        }
        if !group_by.is_empty() {
            plain.push_str(&format!(" GROUP BY {group_by}"));
        }
        if let Some(having) = &select.having {
            plain.push_str(&format!(" HAVING {having}"));
        }
        if plain != select.to_string() {
            return self.line(depth, select.to_string());
        }

        let list = items.join(", ");
        if list.chars().count() <= LIST_WIDTH {
            self.line(depth, format!("SELECT{distinct} {list}"));
        } else {
            self.line(depth, format!("SELECT{distinct}"));
            let last = items.len().saturating_sub(1);
            for (i, item) in items.iter().enumerate() {
                let comma = if i < last { "," } else { "" };
                self.line(depth + 1, format!("{item}{comma}"));
            }
        }
        for (i, from) in select.from.iter().enumerate() {
            self.from(from, if i == 0 { "FROM " } else { ", " }, depth);
        }
        if let Some(selection) = &select.selection {
            self.condition("WHERE ", selection, depth);
        }
        if !group_by.is_empty() {
            self.line(depth, format!("GROUP BY {group_by}"));
        }
        if let Some(having) = &select.having {
            self.condition("HAVING ", having, depth);
        }
    }

    /// A FROM item and its joins, each join on a line of its own.
    fn from(&mut self, from: &TableWithJoins, keyword: &str, depth: usize) {
        self.relation(keyword, &from.relation, depth);
        for join in &from.joins {
            // sqlparser writes a join as `<operator> <relation><constraint>`:
            // the text around the relation is the operator and the ON.
            let text = join.to_string();
            let relation = join.relation.to_string();
            match text.split_once(relation.as_str()) {
                Some((operator, constraint)) => {
                    self.relation(operator, &join.relation, depth);
                    self.append(constraint);
                }
                None => self.line(depth, text),
            }
        }
    }

    /// `keyword` and a table or derived table, starting a line at `depth`.
    fn relation(&mut self, keyword: &str, relation: &TableFactor, depth: usize) {
        let text = relation.to_string();
        if let TableFactor::Derived { subquery, .. } = relation {
            let inner = format!("({subquery})");
            if let Some((before, after)) = text.split_once(inner.as_str()) {
                self.line(depth, format!("{keyword}{before}("));
                self.query(subquery, depth + 1);
                self.line(depth, format!("){after}"));
                return;
            }
        }
        self.line(depth, format!("{keyword}{text}"));
    }

    /// A WHERE / HAVING condition: its `AND` parts one per line, the
    /// first after `keyword`, the others indented under it.
    fn condition(&mut self, keyword: &str, condition: &Expr, depth: usize) {
        let mut parts = Vec::new();
        conjuncts(condition, &mut parts);
        for (i, part) in parts.into_iter().enumerate() {
            if i == 0 {
                self.expr(keyword, part, depth);
            } else {
                self.expr("AND ", part, depth + 1);
            }
        }
    }

    /// `prefix` and an expression starting a line at `depth`; a subquery
    /// test has its query indented inside its parentheses.
    fn expr(&mut self, prefix: &str, expr: &Expr, depth: usize) {
        let (opening, subquery) = match expr {
            Expr::Exists { subquery, negated } => {
                let not = if *negated { "NOT " } else { "" };
                (format!("{not}EXISTS ("), subquery)
            }
            Expr::InSubquery {
                expr: tested,
                subquery,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                (format!("{tested} {not}IN ("), subquery)
            }
            Expr::Subquery(subquery) => ("(".to_string(), subquery),
            other => return self.line(depth, format!("{prefix}{other}")),
        };
        if format!("{opening}{subquery})") != expr.to_string() {
            return self.line(depth, format!("{prefix}{expr}"));
        }
        self.line(depth, format!("{prefix}{opening}"));
        self.query(subquery, depth + 1);
        self.line(depth, ")");
    }
}

/// The `AND` parts of `expr`, through parentheses around `AND`s; a
/// part's own parentheses go too unless it is an `OR` (which would then
/// bind looser than the `AND`s around it).
fn conjuncts<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner)
            if !matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::Or | BinaryOperator::Xor,
                    ..
                }
            ) =>
        {
            conjuncts(inner, out);
        }
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn laid_out(sql: &str) -> String {
        let statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        pretty(&statements[0])
    }

    #[test]
    fn clauses_go_one_per_line() {
        assert_eq!(
            laid_out(
                "SELECT c.id, c.country FROM c LEFT OUTER JOIN (SELECT o.id AS k, count(1) AS n \
                 FROM o WHERE ((o.id IS NOT NULL AND (o.s = 'x')) AND (o.a > 1 OR o.b < 2)) \
                 GROUP BY o.id HAVING (count(1) >= 2)) AS m ON c.id = m.k WHERE (m.n > 3)"
            ),
            "SELECT c.id, c.country\n\
             FROM c\n\
             LEFT OUTER JOIN (\n  \
               SELECT o.id AS k, count(1) AS n\n  \
               FROM o\n  \
               WHERE o.id IS NOT NULL\n    \
                 AND o.s = 'x'\n    \
                 AND (o.a > 1 OR o.b < 2)\n  \
               GROUP BY o.id\n  \
               HAVING count(1) >= 2\n\
             ) AS m ON c.id = m.k\n\
             WHERE m.n > 3"
        );
    }

    #[test]
    fn subqueries_are_indented() {
        assert_eq!(
            laid_out(
                "SELECT c.id FROM c WHERE (c.x = 1) IS NOT TRUE AND NOT EXISTS (SELECT 1 FROM \
                 (SELECT o.id AS b FROM o GROUP BY o.id) AS b WHERE (c.id = b.b)) AND c.id IN \
                 (SELECT id FROM d)"
            ),
            "SELECT c.id\n\
             FROM c\n\
             WHERE (c.x = 1) IS NOT TRUE\n  \
               AND NOT EXISTS (\n    \
                 SELECT 1\n    \
                 FROM (\n      \
                   SELECT o.id AS b\n      \
                   FROM o\n      \
                   GROUP BY o.id\n    \
                 ) AS b\n    \
                 WHERE c.id = b.b\n  \
               )\n  \
               AND c.id IN (\n    \
                 SELECT id\n    \
                 FROM d\n  \
               )"
        );
    }

    #[test]
    fn long_lists_and_set_operations() {
        let long = "SELECT customers.customer_id, customers.created_at, customers.country, \
                    customers.n_countries, customers.birthday FROM customers UNION SELECT * \
                    FROM extra ORDER BY 1 LIMIT 3";
        assert_eq!(
            laid_out(long),
            "SELECT\n  \
               customers.customer_id,\n  \
               customers.created_at,\n  \
               customers.country,\n  \
               customers.n_countries,\n  \
               customers.birthday\n\
             FROM customers\n\
             UNION\n\
             SELECT *\n\
             FROM extra\n\
             ORDER BY 1\n\
             LIMIT 3"
        );
    }

    #[test]
    fn unknown_clauses_stay_on_one_line() {
        let sql = "WITH a AS (SELECT 1) SELECT * FROM a";
        assert_eq!(laid_out(sql), sql);
        assert_eq!(
            laid_out("SELECT x FROM t QUALIFY x > 1"),
            "SELECT x FROM t QUALIFY x > 1"
        );
        assert_eq!(
            laid_out("INSERT INTO t VALUES (1)"),
            "INSERT INTO t VALUES (1)"
        );
    }
}
