//! The R x F grid of `segql rfm`: customers and average spend per cell of
//! recency and frequency quintile scores, printed in the terminal and drawn
//! as an SVG heat map.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast as arrow_cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::functions_aggregate::expr_fn::{avg, count};
use datafusion::logical_expr::{LogicalPlanBuilder, cast, col, lit};
use datafusion::prelude::SessionContext;

use crate::error::Error;
use crate::segment::AsOf;
use crate::segment::columns::{ColumnMap, PurchaseRule};
use crate::segment::planner::metrics_from_orders;
use crate::segment::rfm::RfmScheme;

/// One cell: customers with recency score `r` and frequency score `f`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cell {
    pub customers: i64,
    pub avg_spend: f64,
}

/// `cells[r - 1][f - 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RfmGrid {
    pub as_of: AsOf,
    /// Scores run 1..=bins (`bins` best).
    pub bins: usize,
    pub cells: Vec<Vec<Cell>>,
}

impl RfmGrid {
    /// Scores every purchasing customer (orders `purchases` admits, with a
    /// customer id, before `as_of`, read through `columns`) and counts
    /// them per cell, on `ctx`.
    pub async fn compute(
        ctx: &SessionContext,
        columns: &ColumnMap,
        purchases: &PurchaseRule,
        scheme: &RfmScheme,
        as_of: AsOf,
    ) -> Result<Self, Error> {
        let bins = usize::from(scheme.bins);
        let orders = ctx
            .table_provider("orders")
            .await
            .map_err(|_| Error::MissingTable {
                table: "orders",
                needed_by: "RFM scoring",
            })?;
        let plan = metrics_from_orders(orders, columns, purchases, as_of, Some(scheme), &[])?;
        let plan = LogicalPlanBuilder::from(plan).project(vec![
            col("__rfm_r").alias("r"),
            col("__rfm_f").alias("f"),
            col("__amount_spent").alias("spend"),
        ])?;
        Self::count_cells(ctx, plan.build()?, bins, as_of).await
    }

    /// The grid of customers already scored: `scores` is a table of
    /// `segql rfm --out` (columns `r`, `f` and, with total spend as the
    /// monetary measure, `monetary`), so the orders are not read again.
    pub async fn from_scores(
        ctx: &SessionContext,
        scores: std::sync::Arc<dyn datafusion::catalog::TableProvider>,
        scheme: &RfmScheme,
        as_of: AsOf,
    ) -> Result<Self, Error> {
        let plan = LogicalPlanBuilder::scan(
            "scores",
            datafusion::datasource::provider_as_source(scores),
            None,
        )?
        .project(vec![col("r"), col("f"), col("monetary").alias("spend")])?
        .build()?;
        Self::count_cells(ctx, plan, usize::from(scheme.bins), as_of).await
    }

    /// Counts the rows of `plan` (`r`, `f`, `spend`) per cell.
    async fn count_cells(
        ctx: &SessionContext,
        plan: datafusion::logical_expr::LogicalPlan,
        bins: usize,
        as_of: AsOf,
    ) -> Result<Self, Error> {
        let batches = LogicalPlanBuilder::from(plan)
            .aggregate(
                vec![
                    cast(col("r"), DataType::Int64).alias("r"),
                    cast(col("f"), DataType::Int64).alias("f"),
                ],
                vec![
                    count(lit(1)).alias("customers"),
                    avg(cast(col("spend"), DataType::Float64)).alias("avg_spend"),
                ],
            )?
            .build()
            .map(|plan| ctx.execute_logical_plan(plan))?
            .await?
            .collect()
            .await?;
        let mut cells = vec![vec![Cell::default(); bins]; bins];
        for batch in batches {
            let r = batch.column(0).as_primitive::<Int64Type>();
            let f = batch.column(1).as_primitive::<Int64Type>();
            let n = arrow_cast(batch.column(2), &DataType::Int64)
                .map_err(datafusion::error::DataFusionError::from)?;
            let n = n.as_primitive::<Int64Type>();
            let spend = batch.column(3).as_primitive::<Float64Type>();
            for row in 0..batch.num_rows() {
                if r.is_null(row) || f.is_null(row) {
                    continue;
                }
                let (r, f) = (r.value(row) as usize, f.value(row) as usize);
                if (1..=bins).contains(&r) && (1..=bins).contains(&f) {
                    cells[r - 1][f - 1] = Cell {
                        customers: n.value(row),
                        avg_spend: if spend.is_null(row) {
                            0.0
                        } else {
                            spend.value(row)
                        },
                    };
                }
            }
        }
        Ok(Self { as_of, bins, cells })
    }

    fn max_customers(&self) -> i64 {
        self.cells
            .iter()
            .flatten()
            .map(|c| c.customers)
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// The grid as text: recency rows `bins` (top) to 1, frequency columns
    /// 1 to `bins`; each cell "customers / average spend", shaded by customers.
    pub fn to_text(&self) -> String {
        const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
        let max = self.max_customers() as f64;
        let mut out = format!(
            "R x F grid as of {} (rows: recency score, {} = most recent; columns: frequency score)\n",
            self.as_of, self.bins
        );
        let _ = write!(out, "{:>5}", "R\\F");
        for f in 1..=self.bins {
            let _ = write!(out, " | {:^18}", f);
        }
        out.push('\n');
        for r in (1..=self.bins).rev() {
            let _ = write!(out, "{:>5}", r);
            for f in 1..=self.bins {
                let cell = self.cells[r - 1][f - 1];
                let level = ((cell.customers as f64 / max) * 4.0).round() as usize;
                let shade = SHADES[level.min(4)];
                let _ = write!(
                    out,
                    " | {shade}{:>6} {:>9.2}{shade}",
                    cell.customers, cell.avg_spend
                );
            }
            out.push('\n');
        }
        out.push_str("cells: customers, average spend; shading: share of the fullest cell\n");
        out
    }

    /// The grid as an SVG heat map: darker cells hold more customers.
    pub fn to_svg(&self) -> String {
        let (cell, margin) = (110, 70);
        let size = margin + cell * self.bins + 20;
        let max = self.max_customers() as f64;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{}\" \
             font-family=\"sans-serif\" font-size=\"13\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{margin}\" y=\"22\" font-size=\"15\">R x F grid as of {}</text>\n",
            size + 30,
            self.as_of
        );
        for r in (1..=self.bins).rev() {
            let y = 40 + (self.bins - r) * cell;
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">R {r}</text>",
                margin - 8,
                y + cell / 2
            );
            for f in 1..=self.bins {
                let x = margin + (f - 1) * cell;
                let c = self.cells[r - 1][f - 1];
                let share = c.customers as f64 / max;
                // From pale to deep blue.
                let shade = |low: f64, high: f64| (low + (high - low) * share).round() as u8;
                let (red, green, blue) =
                    (shade(239.0, 8.0), shade(243.0, 48.0), shade(255.0, 107.0));
                let ink = if share > 0.5 { "white" } else { "black" };
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" \
                     fill=\"rgb({red},{green},{blue})\" stroke=\"white\"/>\n\
                     <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{}</text>\n\
                     <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\" font-size=\"11\">avg {:.0}</text>",
                    x + cell / 2,
                    y + cell / 2 - 4,
                    c.customers,
                    x + cell / 2,
                    y + cell / 2 + 14,
                    c.avg_spend
                );
            }
        }
        let bottom = 40 + self.bins * cell + 20;
        for f in 1..=self.bins {
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{bottom}\" text-anchor=\"middle\">F {f}</text>",
                margin + (f - 1) * cell + cell / 2
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// The grid as a PNG heat map: the same layout and colours as the SVG,
    /// customers and average spend in each cell.
    pub fn to_png(&self) -> crate::raster::Canvas {
        use crate::raster::{BLACK, Canvas, WHITE, compact};
        let (cell, margin, top) = (110i64, 70i64, 30i64);
        let size = margin + cell * self.bins as i64 + 20;
        let mut canvas = Canvas::new(size as u32, (top + cell * self.bins as i64 + 50) as u32);
        let max = self.max_customers() as f64;
        for r in 1..=self.bins {
            let y = top + (self.bins - r) as i64 * cell;
            let label = format!("R {r}");
            canvas.text(
                margin - 12 - Canvas::text_width(&label, 2),
                y + cell / 2 - 7,
                &label,
                2,
                BLACK,
            );
            for f in 1..=self.bins {
                let x = margin + (f - 1) as i64 * cell;
                let c = self.cells[r - 1][f - 1];
                let share = c.customers as f64 / max;
                let shade = |low: f64, high: f64| (low + (high - low) * share).round() as u8;
                let color = [shade(239.0, 8.0), shade(243.0, 48.0), shade(255.0, 107.0)];
                canvas.fill_rect(x + 1, y + 1, cell - 2, cell - 2, color);
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let count = c.customers.to_string();
                canvas.text(
                    x + (cell - Canvas::text_width(&count, 3)) / 2,
                    y + cell / 2 - 22,
                    &count,
                    3,
                    ink,
                );
                let spend = compact(c.avg_spend);
                canvas.text(
                    x + (cell - Canvas::text_width(&spend, 2)) / 2,
                    y + cell / 2 + 8,
                    &spend,
                    2,
                    ink,
                );
            }
        }
        for f in 1..=self.bins {
            let label = format!("F {f}");
            let x = margin + (f - 1) as i64 * cell + (cell - Canvas::text_width(&label, 2)) / 2;
            canvas.text(x, top + self.bins as i64 * cell + 16, &label, 2, BLACK);
        }
        canvas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> RfmGrid {
        let mut cells = vec![vec![Cell::default(); 5]; 5];
        cells[4][4] = Cell {
            customers: 100,
            avg_spend: 2500.5,
        };
        cells[0][0] = Cell {
            customers: 50,
            avg_spend: 12.0,
        };
        RfmGrid {
            as_of: AsOf::day(chrono::NaiveDate::from_ymd_opt(2011, 12, 10).unwrap_or_default()),
            bins: 5,
            cells,
        }
    }

    #[test]
    fn text_puts_recent_frequent_top_right() {
        let text = grid().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("    5"), "{text}");
        assert!(lines[2].ends_with("█   100   2500.50█"), "{text}");
        assert!(lines[6].starts_with("    1 | ▒    50     12.00▒"), "{text}");
    }

    #[test]
    fn png_has_a_shaded_cell_per_score_pair() {
        let canvas = grid().to_png();
        assert_eq!((canvas.width(), canvas.height()), (640, 630));
        let bytes = canvas.to_png().unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        // The fullest cell (R 5, F 5: top right) is the darkest blue.
        let at = |x: usize, y: usize| &pixels[(y * 640 + x) * 3..(y * 640 + x) * 3 + 3];
        assert_eq!(at(70 + 4 * 110 + 5, 30 + 5), [8, 48, 107]);
        // An empty cell is the palest.
        assert_eq!(at(70 + 5, 30 + 5), [239, 243, 255]);
        let dark = pixels.chunks(3).filter(|p| p == &[8, 48, 107]).count();
        assert!(dark > 100 * 100, "{dark}");
    }

    #[test]
    fn svg_has_a_cell_per_score_pair() {
        let svg = grid().to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 25);
        assert!(
            svg.contains("fill=\"rgb(8,48,107)\""),
            "the fullest cell is the darkest"
        );
    }
}
