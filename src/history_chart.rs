//! A segment's size over time: a terminal sparkline and an SVG line chart.

use std::fmt::Write as _;

use crate::store::tables::Size;
use crate::time::format_micros;

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

/// An SVG line chart of `history` (one point per refresh, by `as_of`).
pub fn to_svg(code: &str, history: &[Size]) -> String {
    let (width, height, left, right, top, bottom) = (720.0, 360.0, 70.0, 20.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = history.iter().map(|s| s.size).max().unwrap_or(0).max(1) as f64;
    let (first, last) = (
        history.first().map_or(0, |s| s.as_of),
        history.last().map_or(0, |s| s.as_of),
    );
    let span = (last - first).max(1) as f64;
    let x = |at: i64| {
        if history.len() < 2 {
            left + plot_w / 2.0
        } else {
            left + (at - first) as f64 / span * plot_w
        }
    };
    let y = |size: i64| top + plot_h - size as f64 / max * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"24\" font-size=\"15\">Size of segment {code}</text>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#444\"/>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#444\"/>\n",
        top + plot_h,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    for tick in 0..=4 {
        let value = (max * f64::from(tick) / 4.0).round() as i64;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{value}</text>",
            left - 8.0,
            y(value) + 4.0
        );
    }
    for (at, anchor) in [(first, "start"), (last, "end")] {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            x(at),
            top + plot_h + 20.0,
            &format_micros(at)[..10]
        );
    }
    let points: Vec<String> = history
        .iter()
        .map(|s| format!("{:.1},{:.1}", x(s.as_of), y(s.size)))
        .collect();
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#08306b\" stroke-width=\"2\" points=\"{}\"/>",
        points.join(" ")
    );
    for s in history {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#08306b\"><title>{}: {}</title></circle>",
            x(s.as_of),
            y(s.size),
            &format_micros(s.as_of)[..10],
            s.size
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The same chart as a PNG: axes, size labels, first and last day, and
/// the line with a dot per refresh.
pub fn to_png(history: &[Size]) -> crate::raster::Canvas {
    use crate::raster::{BLACK, Canvas, compact};
    let (width, height, left, right, top, bottom) = (720i64, 360i64, 80i64, 30i64, 30i64, 50i64);
    let mut canvas = Canvas::new(width as u32, height as u32);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let max = history.iter().map(|s| s.size).max().unwrap_or(0).max(1);
    let (first, last) = (
        history.first().map_or(0, |s| s.as_of),
        history.last().map_or(0, |s| s.as_of),
    );
    let span = (last - first).max(1);
    let x = |at: i64| {
        if history.len() < 2 {
            left + plot_w / 2
        } else {
            left + ((at - first) as f64 / span as f64 * plot_w as f64) as i64
        }
    };
    let y = |size: i64| top + plot_h - (size as f64 / max as f64 * plot_h as f64) as i64;
    let grey = [68, 68, 68];
    canvas.line((left, top), (left, top + plot_h), 1, grey);
    canvas.line((left, top + plot_h), (left + plot_w, top + plot_h), 1, grey);
    for tick in 0..=4 {
        let value = max * tick / 4;
        let label = compact(value as f64);
        canvas.text(
            left - 10 - Canvas::text_width(&label, 2),
            y(value) - 7,
            &label,
            2,
            BLACK,
        );
        canvas.line((left - 5, y(value)), (left, y(value)), 1, grey);
    }
    let first_day = &format_micros(first)[..10];
    let last_day = &format_micros(last)[..10];
    canvas.text(left, top + plot_h + 14, first_day, 2, BLACK);
    canvas.text(
        left + plot_w - Canvas::text_width(last_day, 2),
        top + plot_h + 14,
        last_day,
        2,
        BLACK,
    );
    let blue = [8, 48, 107];
    for pair in history.windows(2) {
        canvas.line(
            (x(pair[0].as_of), y(pair[0].size)),
            (x(pair[1].as_of), y(pair[1].size)),
            3,
            blue,
        );
    }
    for s in history {
        canvas.fill_rect(x(s.as_of) - 4, y(s.size) - 4, 9, 9, blue);
    }
    canvas
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

    #[test]
    fn svg_has_a_point_per_refresh() {
        let size = |as_of: i64, size: i64| Size {
            segment: "vip".into(),
            refresh_id: 1,
            refreshed_at: 0,
            as_of,
            size,
            entered: 0,
            exited: 0,
        };
        let svg = to_svg("vip", &[size(0, 3), size(86_400_000_000, 6)]);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("points=\"70.0,175.0 700.0,40.0\""));
        assert!(svg.ends_with("</svg>\n"));
        let png = to_png(&[size(0, 3), size(86_400_000_000, 6)]);
        assert_eq!((png.width(), png.height()), (720, 360));
    }
}
