//! The R x F grid of `segql rfm`: customers and average spend per cell of
//! recency and frequency quintile scores, printed in the terminal and drawn
//! as a heat map (PNG or SVG, one picture; see [`crate::chart`]).

use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

use futures::StreamExt;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast as arrow_cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{LogicalPlanBuilder, col};
use datafusion::prelude::SessionContext;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::chart::{self, Picture, Ticks};
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

/// Counts scored customers per cell from batches of `segql rfm --out`
/// (columns `r`, `f` and `monetary`) as they are written, so the grid
/// needs no second read of the orders or of the written file.
/// Batches may come from several partitions at once, so the cells sit
/// behind a lock.
#[derive(Debug)]
pub struct GridCounter {
    bins: usize,
    /// Per cell (`r - 1`, `f - 1`): customers, spend summed and customers
    /// with a spend.
    cells: Mutex<Vec<(i64, f64, i64)>>,
}

impl GridCounter {
    pub fn new(scheme: &RfmScheme) -> Self {
        let bins = usize::from(scheme.bins);
        Self {
            bins,
            cells: Mutex::new(vec![(0, 0.0, 0); bins * bins]),
        }
    }

    fn cells(&self) -> datafusion::common::Result<MutexGuard<'_, Vec<(i64, f64, i64)>>> {
        self.cells.lock().map_err(|_| {
            datafusion::error::DataFusionError::Internal(
                "the RFM grid's counter was poisoned by a panic while counting".into(),
            )
        })
    }

    /// Adds the customers of `batch`: rows without both scores (no
    /// purchase) are in no cell.
    pub fn add(&self, batch: &RecordBatch) -> datafusion::common::Result<()> {
        let column = |name: &str, to: &DataType| {
            let index = batch.schema().index_of(name)?;
            Ok::<_, datafusion::error::DataFusionError>(arrow_cast(batch.column(index), to)?)
        };
        let (r, f) = (
            column("r", &DataType::Int64)?,
            column("f", &DataType::Int64)?,
        );
        let spend = column("monetary", &DataType::Float64)?;
        let (r, f) = (r.as_primitive::<Int64Type>(), f.as_primitive::<Int64Type>());
        let spend = spend.as_primitive::<Float64Type>();
        let bins = self.bins as i64;
        let mut cells = self.cells()?;
        for row in 0..batch.num_rows() {
            if r.is_null(row) || f.is_null(row) {
                continue;
            }
            let (r, f) = (r.value(row), f.value(row));
            if !((1..=bins).contains(&r) && (1..=bins).contains(&f)) {
                continue;
            }
            let cell = &mut cells[(r - 1) as usize * self.bins + (f - 1) as usize];
            cell.0 += 1;
            if spend.is_valid(row) {
                cell.1 += spend.value(row);
                cell.2 += 1;
            }
        }
        Ok(())
    }

    /// The grid counted so far, as of `as_of`.
    pub fn grid(&self, as_of: AsOf) -> datafusion::common::Result<RfmGrid> {
        let cells = self
            .cells()?
            .chunks(self.bins.max(1))
            .map(|row| {
                row.iter()
                    .map(|&(customers, spent, with_spend)| Cell {
                        customers,
                        avg_spend: if with_spend == 0 {
                            0.0
                        } else {
                            spent / with_spend as f64
                        },
                    })
                    .collect()
            })
            .collect();
        Ok(RfmGrid {
            as_of,
            bins: self.bins,
            cells,
        })
    }
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
            col("__amount_spent").alias("monetary"),
        ])?;
        let counter = GridCounter::new(scheme);
        let mut batches = ctx
            .execute_logical_plan(plan.build()?)
            .await?
            .execute_stream()
            .await?;
        while let Some(batch) = batches.next().await {
            counter.add(&batch?)?;
        }
        Ok(counter.grid(as_of)?)
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

    /// The grid as an SVG heat map (the picture of [`RfmGrid::to_png`]).
    pub fn to_svg(&self) -> Result<String, Error> {
        chart::svg(self)
    }

    /// The grid as a PNG heat map: recency rows (best at the top) by
    /// frequency columns, each cell shaded by its customers and labelled
    /// with them and their average spend, and a colour legend.
    pub fn to_png(&self) -> Result<Vec<u8>, Error> {
        chart::png(self)
    }
}

/// Layout of the heat map, in pixels.
const WIDTH: u32 = 780;
const HEIGHT: u32 = 650;
/// The square of cells: left and top edges, side.
const PLOT_LEFT: i32 = 85;
const PLOT_TOP: i32 = 70;
const PLOT_SIDE: i32 = 520;
/// The legend's gradient bar: left edge and width.
const BAR_LEFT: i32 = 665;
const BAR_WIDTH: i32 = 24;

/// Colour stops from an empty cell to the fullest one: pale to deep blue.
const RAMP: [(f64, [f64; 3]); 3] = [
    (0.0, [239.0, 243.0, 255.0]),
    (0.5, [107.0, 174.0, 214.0]),
    (1.0, [8.0, 48.0, 107.0]),
];

/// The colour of a cell holding `share` (0 to 1) of the fullest cell's
/// customers.
pub fn shade(share: f64) -> RGBColor {
    let share = share.clamp(0.0, 1.0);
    let mut color = RAMP[0].1;
    for pair in RAMP.windows(2) {
        let ((from, low), (to, high)) = (pair[0], pair[1]);
        if share >= from {
            let t = ((share - from) / (to - from)).min(1.0);
            color = [0, 1, 2].map(|i| low[i] + (high[i] - low[i]) * t);
        }
    }
    let [r, g, b] = color.map(|c| c.round() as u8);
    RGBColor(r, g, b)
}

/// Black or white, whichever reads better on `background`.
fn ink_on(background: RGBColor) -> RGBColor {
    let RGBColor(r, g, b) = background;
    let luma = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
    if luma < 150.0 { WHITE } else { chart::INK }
}

impl Picture for RfmGrid {
    fn size(&self) -> (u32, u32) {
        (WIDTH, HEIGHT)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let centre = Pos::new(HPos::Center, VPos::Center);
        let title_x = PLOT_LEFT + PLOT_SIDE / 2;
        root.draw(&Text::new(
            format!("R x F grid as of {}", self.as_of),
            (title_x, 12),
            chart::text(22.0, chart::INK).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        root.draw(&Text::new(
            format!(
                "customers per cell and their average spend; {} = most recent, most frequent",
                self.bins
            ),
            (title_x, 42),
            chart::text(13.0, chart::MUTED).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;

        let bins = self.bins.max(1);
        let span = bins as f64 + 0.5;
        let keys: Vec<f64> = (1..=bins).map(|score| score as f64).collect();
        let area = root.margin(
            PLOT_TOP,
            HEIGHT as i32 - PLOT_TOP - PLOT_SIDE - 50,
            PLOT_LEFT - 60,
            WIDTH as i32 - PLOT_LEFT - PLOT_SIDE,
        );
        let mut grid = ChartBuilder::on(&area)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(
                Ticks {
                    low: 0.5,
                    high: span,
                    ticks: keys.clone(),
                },
                Ticks {
                    low: 0.5,
                    high: span,
                    ticks: keys,
                },
            )?;
        let score = |value: &f64| format!("{value:.0}");
        grid.configure_mesh()
            .disable_mesh()
            .axis_style(chart::INK)
            .label_style(chart::text(15.0, chart::INK))
            .axis_desc_style(chart::text(16.0, chart::INK))
            .x_label_formatter(&score)
            .y_label_formatter(&score)
            .x_desc("Frequency score (F)")
            .y_desc("Recency score (R)")
            .draw()?;

        let max = self.max_customers() as f64;
        // Cell labels shrink with the cells (up to 10 x 10); the spend
        // line is left out when the cells are too small to hold it.
        let cell = f64::from(PLOT_SIDE) / bins as f64;
        let count_size = (cell / 4.2).min(20.0);
        let with_spend = cell >= 80.0;
        for r in 1..=bins {
            for f in 1..=bins {
                let c = self
                    .cells
                    .get(r - 1)
                    .and_then(|row| row.get(f - 1))
                    .copied()
                    .unwrap_or_default();
                let (x, y) = (f as f64, r as f64);
                let color = shade(c.customers as f64 / max);
                grid.plotting_area().draw(&Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    color.filled(),
                ))?;
                grid.plotting_area().draw(&Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    WHITE.stroke_width(2),
                ))?;
                let ink = ink_on(color);
                // An empty cell has no average spend to show.
                let spend_line = with_spend && c.customers > 0;
                let count_at = if spend_line { -9 } else { 0 };
                grid.plotting_area().draw(
                    &(EmptyElement::at((x, y))
                        + Text::new(
                            c.customers.to_string(),
                            (0, count_at),
                            chart::text(count_size, ink).pos(centre),
                        )),
                )?;
                if spend_line {
                    grid.plotting_area().draw(
                        &(EmptyElement::at((x, y))
                            + Text::new(
                                format!("avg {}", chart::compact(c.avg_spend)),
                                (0, 14),
                                chart::text(13.0, ink).pos(centre),
                            )),
                    )?;
                }
            }
        }

        // The legend: the colour ramp from no customers (bottom) to the
        // fullest cell (top), with its values.
        const STEPS: i32 = 104;
        let step = PLOT_SIDE / STEPS;
        for i in 0..STEPS {
            let top = PLOT_TOP + i * step;
            let share = 1.0 - (f64::from(i) + 0.5) / f64::from(STEPS);
            root.draw(&Rectangle::new(
                [(BAR_LEFT, top), (BAR_LEFT + BAR_WIDTH, top + step)],
                shade(share).filled(),
            ))?;
        }
        let bottom = PLOT_TOP + STEPS * step;
        root.draw(&Rectangle::new(
            [(BAR_LEFT, PLOT_TOP), (BAR_LEFT + BAR_WIDTH, bottom)],
            chart::INK.stroke_width(1),
        ))?;
        let label = Pos::new(HPos::Left, VPos::Center);
        for (share, value) in [(1.0, max), (0.5, max / 2.0), (0.0, 0.0)] {
            let y = bottom - (share * f64::from(bottom - PLOT_TOP)).round() as i32;
            let right = BAR_LEFT + BAR_WIDTH;
            root.draw(&PathElement::new(
                vec![(right, y), (right + 5, y)],
                chart::INK.stroke_width(1),
            ))?;
            root.draw(&Text::new(
                chart::compact(value),
                (right + 9, y),
                chart::text(14.0, chart::INK).pos(label),
            ))?;
        }
        root.draw(&Text::new(
            "customers",
            (BAR_LEFT + BAR_WIDTH / 2, PLOT_TOP - 14),
            chart::text(13.0, chart::MUTED).pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))?;
        Ok(())
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

    /// A grid with four filled cells of different sizes.
    fn graded() -> RfmGrid {
        let mut grid = grid();
        grid.cells[2][2].customers = 25;
        grid.cells[1][3].customers = 10;
        grid
    }

    /// Top-left pixel of cell (r, f), a few pixels in from its border.
    fn inside(r: usize, f: usize) -> (usize, usize) {
        let side = PLOT_SIDE as usize / 5;
        (
            PLOT_LEFT as usize + (f - 1) * side + 6,
            PLOT_TOP as usize + (5 - r) * side + 6,
        )
    }

    #[test]
    fn png_heat_map_shades_cells_by_customers() {
        let png = chart::decode_png(&graded().to_png().unwrap());
        assert_eq!((png.width, png.height), (WIDTH, HEIGHT));
        // The title is dark text on white above the cells.
        let title = png.count_in((200, 8), (460, 40), |p| p.luma() < 100.0);
        assert!(title > 300, "{title} dark pixels in the title");
        // Each cell is filled with its share of the fullest cell.
        for (r, f, customers) in [(5, 5, 100), (1, 1, 50), (3, 3, 25), (2, 4, 10), (4, 2, 0)] {
            let (x, y) = inside(r, f);
            let RGBColor(red, green, blue) = shade(customers as f64 / 100.0);
            assert_eq!(png.at(x, y), [red, green, blue], "R {r} F {f}");
        }
        assert_eq!(png.at(inside(5, 5).0, inside(5, 5).1), [8, 48, 107]);
        assert_eq!(png.at(inside(4, 2).0, inside(4, 2).1), [239, 243, 255]);
        // More customers, darker cell.
        let luma: Vec<f64> = [(5, 5), (1, 1), (3, 3), (2, 4), (4, 2)]
            .iter()
            .map(|&(r, f)| chart::Rgb(png.at(inside(r, f).0, inside(r, f).1)).luma())
            .collect();
        assert!(luma.windows(2).all(|w| w[0] < w[1]), "{luma:?}");
        // The legend bar runs from the darkest (top) to the palest (bottom).
        let bar = (BAR_LEFT + BAR_WIDTH / 2) as usize;
        let rgb = |RGBColor(r, g, b)| [r, g, b];
        let top = png.at(bar, PLOT_TOP as usize + 2);
        let bottom = png.at(bar, (PLOT_TOP + PLOT_SIDE) as usize - 3);
        assert_eq!(top, rgb(shade(1.0 - 0.5 / 104.0)));
        assert_eq!(bottom, rgb(shade(0.5 / 104.0)));
        // The counts are written in the cells: white on the darkest.
        let (x, y) = inside(5, 5);
        let white = png.count_in((x, y), (x + 90, y + 90), |p| p.0 == [255, 255, 255]);
        assert!(white > 50, "{white} white pixels in the fullest cell");
    }

    #[test]
    fn svg_heat_map_has_title_axes_and_legend() {
        let svg = graded().to_svg().unwrap();
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            ">\nR x F grid as of 2011-12-10\n</text>",
            ">\nFrequency score (F)\n</text>",
            ">\nRecency score (R)\n</text>",
            ">\ncustomers\n</text>",
            ">\n100\n</text>",
            ">\navg 2.5k\n</text>",
            ">\n25\n</text>",
        ] {
            assert!(svg.contains(text), "{text} missing from {svg}");
        }
        // The fullest cell in the darkest blue, empty ones in the palest.
        assert_eq!(svg.matches("fill=\"#08306B\"").count(), 1);
        assert!(svg.contains("fill=\"#EFF3FF\""));
    }

    #[test]
    fn shades_run_from_pale_to_deep_blue() {
        assert_eq!(shade(0.0), RGBColor(239, 243, 255));
        assert_eq!(shade(0.5), RGBColor(107, 174, 214));
        assert_eq!(shade(1.0), RGBColor(8, 48, 107));
        assert_eq!(shade(2.0), RGBColor(8, 48, 107));
        assert_eq!(ink_on(shade(1.0)), WHITE);
        assert_eq!(ink_on(shade(0.0)), chart::INK);
    }
}
