//! A segment's size over time: a terminal sparkline, and a line chart drawn
//! as PNG or SVG (one picture; see [`crate::chart`]).

use chrono::{Datelike, NaiveDate};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::chart::{self, Picture, Ticks};
use crate::error::Error;
use crate::store::tables::Size;
use crate::time::{date_from_days, days_since_epoch};

/// Bars from lowest to highest.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One bar per size, scaled between the smallest and the largest.
pub fn sparkline(sizes: &[i64]) -> String {
    let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max()) else {
        return String::new();
    };
    sizes
        .iter()
        .map(|&size| {
            if max == min {
                BARS[BARS.len() / 2]
            } else {
                let step = (size - min) as f64 / (max - min) as f64 * (BARS.len() - 1) as f64;
                BARS[step.round() as usize]
            }
        })
        .collect()
}

/// An SVG line chart of `history` (the picture of [`to_png`]).
pub fn to_svg(code: &str, history: &[Size]) -> Result<String, Error> {
    chart::svg(&HistoryChart { code, history })
}

/// A PNG line chart of `history`: one point per refresh, by `as_of`, with
/// dates on the x axis and sizes on the y axis.
pub fn to_png(code: &str, history: &[Size]) -> Result<Vec<u8>, Error> {
    chart::png(&HistoryChart { code, history })
}

const WIDTH: u32 = 760;
const HEIGHT: u32 = 420;
/// At most this many date labels (each "YYYY-MM-DD" takes about 80 pixels).
const MOST_DATE_LABELS: usize = 6;
/// At most this many points get their size written above them.
const MOST_VALUE_LABELS: usize = 12;
const LINE: RGBColor = RGBColor(8, 48, 107);
const MICROS_PER_DAY: f64 = 86_400_000_000.0;

/// One segment's history, ready to draw.
#[derive(Debug)]
struct HistoryChart<'a> {
    code: &'a str,
    history: &'a [Size],
}

/// A day number (days since 1970-01-01) as `YYYY-MM-DD`.
fn day_label(day: f64) -> String {
    date_from_days(day.round() as i32).map_or_else(|| format!("{day:.0}"), |d| d.to_string())
}

/// Date labels for days `low..=high` (days since 1970-01-01): every day,
/// every 2, 7 or 14 days, or the first of every 1, 2, 3, 6, 12, ... months,
/// the finest of those that gives at most `most` labels.
fn date_ticks(low: i32, high: i32, most: usize) -> Vec<i32> {
    for step in [1, 2, 7, 14] {
        let ticks: Vec<i32> = (low..=high).filter(|d| d.rem_euclid(step) == 0).collect();
        if ticks.len() <= most {
            return ticks;
        }
    }
    let (Some(first), Some(last)) = (date_from_days(low), date_from_days(high)) else {
        return vec![low, high];
    };
    let month = |d: NaiveDate| d.year() * 12 + d.month0() as i32;
    for months in [1, 2, 3, 6, 12, 24, 60, 120, 600] {
        let ticks: Vec<i32> = (month(first)..=month(last))
            .filter(|m| m.rem_euclid(months) == 0)
            .filter_map(|m| {
                NaiveDate::from_ymd_opt(m.div_euclid(12), m.rem_euclid(12) as u32 + 1, 1)
            })
            .map(days_since_epoch)
            .filter(|d| (low..=high).contains(d))
            .collect();
        if ticks.len() <= most {
            return ticks;
        }
    }
    vec![low, high]
}

/// A y axis top a little above `max`, at a round number.
fn size_axis_top(max: i64) -> i64 {
    let want = (max as f64 * 1.1).max(4.0);
    let magnitude = 10f64.powf(want.log10().floor());
    let top = [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&top| top >= want)
        .unwrap_or(10.0 * magnitude);
    top.ceil() as i64
}

impl Picture for HistoryChart<'_> {
    fn size(&self) -> (u32, u32) {
        (WIDTH, HEIGHT)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let top_centre = Pos::new(HPos::Center, VPos::Top);
        root.draw(&Text::new(
            format!("Size of segment {}", self.code),
            (WIDTH as i32 / 2, 12),
            chart::text(22.0, chart::INK).pos(top_centre),
        ))?;
        let (Some(first), Some(last)) = (self.history.first(), self.history.last()) else {
            root.draw(&Text::new(
                "no refreshes recorded yet",
                (WIDTH as i32 / 2, HEIGHT as i32 / 2),
                chart::text(16.0, chart::MUTED).pos(Pos::new(HPos::Center, VPos::Center)),
            ))?;
            return Ok(());
        };
        let day = |s: &Size| s.as_of as f64 / MICROS_PER_DAY;
        let (start, end) = (day(first), day(last));
        // A margin on both sides keeps the first and last points off the
        // axes; a single refresh gets a day on each side.
        let pad = ((end - start) * 0.04).max(1.0);
        let (low, high) = (start - pad, end + pad);
        let ticks: Vec<f64> = if self.history.len() == 1 {
            vec![start.floor()]
        } else {
            date_ticks(low.ceil() as i32, high.floor() as i32, MOST_DATE_LABELS)
                .into_iter()
                .map(f64::from)
                .collect()
        };
        let max = self.history.iter().map(|s| s.size).max().unwrap_or(0);
        // The right margin leaves room for half a date label.
        let area = root.margin(50, 15, 10, 45);
        let mut plot = ChartBuilder::on(&area)
            .x_label_area_size(55)
            .y_label_area_size(100)
            .build_cartesian_2d(Ticks { low, high, ticks }, 0..size_axis_top(max))?;
        let date = |d: &f64| day_label(*d);
        let size = |n: &i64| chart::grouped(*n);
        plot.configure_mesh()
            .disable_x_mesh()
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .axis_style(chart::INK)
            .label_style(chart::text(14.0, chart::INK))
            .axis_desc_style(chart::text(16.0, chart::INK))
            .x_labels(MOST_DATE_LABELS)
            .y_labels(6)
            .x_label_formatter(&date)
            .y_label_formatter(&size)
            .x_desc("As of")
            .y_desc("Customers in the segment")
            .draw()?;
        let points: Vec<(f64, i64)> = self.history.iter().map(|s| (day(s), s.size)).collect();
        plot.draw_series(LineSeries::new(
            points.iter().copied(),
            LINE.stroke_width(2),
        ))?;
        plot.draw_series(
            points
                .iter()
                .map(|&point| Circle::new(point, 4, LINE.filled())),
        )?;
        if points.len() <= MOST_VALUE_LABELS {
            let above = Pos::new(HPos::Center, VPos::Bottom);
            plot.draw_series(points.iter().map(|&(x, n)| {
                EmptyElement::at((x, n))
                    + Text::new(
                        chart::grouped(n),
                        (0, -8),
                        chart::text(13.0, chart::INK).pos(above),
                    )
            }))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines() {
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[5, 5]), "▅▅");
        assert_eq!(sparkline(&[0, 7, 14]), "▁▅█");
        assert_eq!(sparkline(&[10, 0]), "█▁");
    }

    fn size(as_of: &str, size: i64) -> Size {
        Size {
            segment: "vip".into(),
            refresh_id: 1,
            refreshed_at: 0,
            as_of: crate::time::day_micros(crate::time::parse_day(as_of).unwrap()),
            size,
            entered: 0,
            exited: 0,
        }
    }

    fn history() -> Vec<Size> {
        vec![
            size("2011-03-01", 38),
            size("2011-04-01", 51),
            size("2011-05-01", 47),
            size("2011-06-01", 80),
        ]
    }

    fn day(text: &str) -> i32 {
        days_since_epoch(crate::time::parse_day(text).unwrap())
    }

    #[test]
    fn date_ticks_are_round_days_or_months() {
        let days = |ticks: Vec<i32>| -> Vec<String> {
            ticks.into_iter().map(|d| day_label(f64::from(d))).collect()
        };
        // A few days: each day.
        assert_eq!(
            days(date_ticks(day("2011-03-01"), day("2011-03-03"), 6)),
            ["2011-03-01", "2011-03-02", "2011-03-03"]
        );
        // Three months: the first of each month.
        assert_eq!(
            days(date_ticks(day("2011-02-26"), day("2011-06-05"), 6)),
            ["2011-03-01", "2011-04-01", "2011-05-01", "2011-06-01"]
        );
        // A year: every other month, on even months from January.
        assert_eq!(
            days(date_ticks(day("2010-12-20"), day("2011-12-10"), 6)),
            [
                "2011-01-01",
                "2011-03-01",
                "2011-05-01",
                "2011-07-01",
                "2011-09-01",
                "2011-11-01"
            ]
        );
        assert_eq!(size_axis_top(80), 100);
        assert_eq!(size_axis_top(3), 4);
        assert_eq!(size_axis_top(228_000), 300_000);
        assert_eq!(size_axis_top(1700), 2000);
        assert_eq!(size_axis_top(0), 4);
    }

    #[test]
    fn svg_history_has_title_dates_and_sizes() {
        let svg = to_svg("vip", &history()).unwrap();
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.ends_with("</svg>\n") || svg.ends_with("</svg>"));
        for text in [
            ">\nSize of segment vip\n</text>",
            ">\nAs of\n</text>",
            ">\nCustomers in the segment\n</text>",
            ">\n2011-03-01\n</text>",
            ">\n2011-04-01\n</text>",
            ">\n2011-05-01\n</text>",
            ">\n2011-06-01\n</text>",
            ">\n80\n</text>",
            ">\n100\n</text>",
        ] {
            assert!(svg.contains(text), "{text} missing from {svg}");
        }
        // The line and a dot per refresh.
        assert_eq!(
            svg.matches("<polyline fill=\"none\" opacity=\"1\" stroke=\"#08306B\"")
                .count(),
            1
        );
        assert_eq!(svg.matches("<circle").count(), 4);
    }

    #[test]
    fn png_history_has_title_and_line() {
        let png = chart::decode_png(&to_png("vip", &history()).unwrap());
        assert_eq!((png.width, png.height), (WIDTH, HEIGHT));
        let title = png.count_in((280, 8), (480, 40), |p| p.luma() < 100.0);
        assert!(title > 300, "{title} dark pixels in the title");
        // The line and its dots, in the line's colour, inside the plot.
        let line = png.count_in((100, 50), (WIDTH as usize, 350), |p| p.0 == [8, 48, 107]);
        assert!(line > 1000, "{line} pixels of the line");
        // Date labels under the plot.
        let dates = png.count_in((90, 355), (WIDTH as usize, 380), |p| p.luma() < 100.0);
        assert!(dates > 200, "{dates} dark pixels of the dates");
    }

    #[test]
    fn no_history_still_draws_a_titled_chart() {
        let svg = to_svg("vip", &[]).unwrap();
        assert!(svg.contains(">\nSize of segment vip\n</text>"));
        assert!(svg.contains(">\nno refreshes recorded yet\n</text>"));
        let png = chart::decode_png(&to_png("vip", &[]).unwrap());
        assert_eq!((png.width, png.height), (WIDTH, HEIGHT));
    }
}
