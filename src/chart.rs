//! Charts drawn with plotters. Each chart is a [`Picture`]: one drawing
//! function, rendered by two backends, an RGB bitmap encoded as PNG and an
//! SVG document, so both files show the same picture. Text is set in DejaVu
//! Sans, bundled with the source (`assets/fonts`, with its licence), so a
//! chart looks the same on every machine and needs no system fonts.

use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, Glyph, PxScale, ScaleFont, point};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use crate::error::Error;

/// The family the bundled font is registered under; SVG files name it too,
/// so a viewer without the font falls back to its own sans-serif.
pub const FONT: &str = "sans-serif";

/// DejaVu Sans (see `assets/fonts/LICENSE-DejaVu.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Text and axis grey.
pub const INK: RGBColor = RGBColor(33, 33, 33);
/// Secondary text: notes and captions.
pub const MUTED: RGBColor = RGBColor(90, 90, 90);

/// A chart that draws itself on any plotters backend.
pub trait Picture {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);

    /// Draws the whole picture on `root`, which covers `size()`.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// A linear axis over `low..high` labelled exactly at `ticks` (chosen by
/// the chart: whole scores, round dates), where plotters would pick its own
/// round numbers.
#[derive(Debug, Clone)]
pub struct Ticks {
    pub low: f64,
    pub high: f64,
    pub ticks: Vec<f64>,
}

impl Ranged for Ticks {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let share = if self.high > self.low {
            (value - self.low) / (self.high - self.low)
        } else {
            0.5
        };
        limit.0 + (f64::from(limit.1 - limit.0) * share).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.low..self.high
    }
}

/// The bundled font, parsed once.
fn dejavu_sans() -> Result<&'static FontRef<'static>, ab_glyph::InvalidFont> {
    static PARSED: OnceLock<Result<FontRef<'static>, ab_glyph::InvalidFont>> = OnceLock::new();
    PARSED
        .get_or_init(|| FontRef::try_from_slice(DEJAVU_SANS))
        .as_ref()
        .map_err(|e| *e)
}

/// A backend that sets text itself, in the bundled font, so both files
/// agree on it: as large as the SVG's `font-size`, and anchored as
/// plotters' SVG backend anchors it (`dy` of 0.76em for the top,
/// 0.5ex for the centre, -0.5ex for the bottom). On a bitmap it also draws
/// the glyphs, each at its own bearing and kerning; plotters' ab_glyph
/// drawing drops the bearings, which spaces labels unevenly.
#[derive(Debug)]
struct Typeset<DB> {
    inner: DB,
    /// Draw glyphs as pixels (a bitmap) rather than handing text on (SVG).
    raster: bool,
}

/// A line of text laid out around its anchor (the origin): the glyphs on
/// their baseline, shifted as the style's anchor asks.
struct Line {
    glyphs: Vec<Glyph>,
    width: f32,
    height: f32,
}

fn font_error<E: std::error::Error + Send + Sync>(
    error: ab_glyph::InvalidFont,
) -> DrawingErrorKind<E> {
    DrawingErrorKind::FontError(Box::new(error))
}

fn lay_out<S: BackendTextStyle>(font: &FontRef<'static>, text: &str, style: &S) -> Option<Line> {
    let em = (style.size() / SIZE_PER_EM) as f32;
    let units = font.units_per_em()?;
    let scale = PxScale::from(em * font.height_unscaled() / units);
    let scaled = font.as_scaled(scale);
    let mut glyphs = Vec::with_capacity(text.len());
    let (mut caret, mut previous) = (0.0f32, None);
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            caret += scaled.kern(previous, id);
        }
        glyphs.push(id.with_scale_and_position(scale, point(caret, 0.0)));
        caret += scaled.h_advance(id);
        previous = Some(id);
    }
    let width = caret;
    // The ex, as SVG viewers take it: the height of an x (ab_glyph's
    // unscaled bounds run top to bottom, so their height is negative).
    let x_height = font
        .outline(font.glyph_id('x'))
        .map_or(0.5 * em, |x| x.bounds.height().abs() * em / units);
    let dx = match style.anchor().h_pos {
        HPos::Left => 0.0,
        HPos::Center => -width / 2.0,
        HPos::Right => -width,
    };
    let baseline = match style.anchor().v_pos {
        VPos::Top => 0.76 * em,
        VPos::Center => 0.5 * x_height,
        VPos::Bottom => -0.5 * x_height,
    };
    for glyph in &mut glyphs {
        glyph.position = point(glyph.position.x + dx, baseline);
    }
    Some(Line {
        glyphs,
        width,
        height: em,
    })
}

impl<DB: DrawingBackend> DrawingBackend for Typeset<DB> {
    type ErrorType = DB::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<DB::ErrorType>> {
        let font = dejavu_sans().map_err(font_error)?;
        Ok(lay_out(font, text, style).map_or((0, 0), |line| {
            (line.width.ceil() as u32, line.height.ceil() as u32)
        }))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        if !self.raster {
            return self.inner.draw_text(text, style, pos);
        }
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let font = dejavu_sans().map_err(font_error)?;
        let Some(line) = lay_out(font, text, style) else {
            return Ok(());
        };
        let turn = style.transform();
        let mut pixels = Vec::new();
        for glyph in line.glyphs {
            if let Some(outline) = font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                outline.draw(|x, y, coverage| {
                    let x = bounds.min.x as i32 + x as i32;
                    let y = bounds.min.y as i32 + y as i32;
                    pixels.push((turn.transform(x, y), coverage));
                });
            }
        }
        for ((x, y), coverage) in pixels {
            if coverage > 0.0 {
                self.inner.draw_pixel(
                    (pos.0 + x, pos.1 + y),
                    BackendColor {
                        alpha: color.alpha * f64::from(coverage.min(1.0)),
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Registers the bundled font with plotters, once per process: text
/// styles look their family up there (though [`Typeset`] measures and
/// draws the text itself).
fn register_font() -> Result<(), Error> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if registered {
        Ok(())
    } else {
        Err(Error::Chart {
            message: "the bundled font DejaVu Sans cannot be read".to_string(),
        })
    }
}

fn drawing_failed<E: std::error::Error + Send + Sync>(error: DrawingAreaErrorKind<E>) -> Error {
    Error::Chart {
        message: error.to_string(),
    }
}

/// The picture as an SVG document (text stays text).
pub fn svg(picture: &impl Picture) -> Result<String, Error> {
    register_font()?;
    let mut out = String::new();
    {
        let root = Typeset {
            inner: SVGBackend::with_string(&mut out, picture.size()),
            raster: false,
        }
        .into_drawing_area();
        picture
            .draw(&root)
            .and_then(|()| root.present())
            .map_err(drawing_failed)?;
    }
    Ok(out)
}

/// The picture as PNG bytes (8-bit RGB).
pub fn png(picture: &impl Picture) -> Result<Vec<u8>, Error> {
    register_font()?;
    let (width, height) = picture.size();
    let mut pixels = vec![255; width as usize * height as usize * 3];
    {
        let root = Typeset {
            inner: BitMapBackend::with_buffer(&mut pixels, (width, height)),
            raster: true,
        }
        .into_drawing_area();
        picture
            .draw(&root)
            .and_then(|()| root.present())
            .map_err(drawing_failed)?;
    }
    let mut out = Vec::new();
    let fail = |source: png::EncodingError| Error::PngEncode { source };
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&pixels).map_err(fail)?;
    }
    Ok(out)
}

/// Writes a chart file to `path` (under a temporary name, then renamed, so
/// a failed write leaves no half file).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let partial = path.with_file_name(name);
    std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| {
            let _ = std::fs::remove_file(&partial);
            Error::OutputCreate {
                path: path.to_path_buf(),
                source,
            }
        })
}

/// plotters' text size is 1.24 times the em (its SVG backend writes
/// `font-size` as the size over 1.24).
const SIZE_PER_EM: f64 = 1.24;

/// A text style in the bundled font, `em` pixels to the em (the SVG
/// `font-size`).
pub fn text(em: f64, color: RGBColor) -> TextStyle<'static> {
    (FONT, em * SIZE_PER_EM).into_font().color(&color)
}

/// Whole numbers with thousands separators (1,500); from a million on, in
/// compact form (4.0M).
pub fn grouped(value: i64) -> String {
    if value.unsigned_abs() >= 1_000_000 {
        return compact(value as f64);
    }
    let digits = value.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + 3);
    if value < 0 {
        out.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Compact numbers for labels: 950, 1.2k, 12k, 4.0M.
pub fn compact(value: f64) -> String {
    if value.abs() >= 1_000_000.0 {
        format!("{:.1}M", value / 1_000_000.0)
    } else if value.abs() >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value.abs() >= 1000.0 {
        format!("{:.1}k", value / 1000.0)
    } else {
        format!("{value:.0}")
    }
}

/// A decoded PNG, for tests that look at the pixels.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Decoded {
    pub width: u32,
    pub height: u32,
    pixels: Vec<u8>,
}

/// One RGB pixel.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rgb(pub [u8; 3]);

#[cfg(test)]
impl Rgb {
    /// Perceived brightness, 0 (black) to 255 (white).
    pub fn luma(self) -> f64 {
        let [r, g, b] = self.0.map(f64::from);
        0.299 * r + 0.587 * g + 0.114 * b
    }
}

#[cfg(test)]
impl Decoded {
    pub fn at(&self, x: usize, y: usize) -> [u8; 3] {
        let at = (y * self.width as usize + x) * 3;
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }

    /// How many pixels of the box from `from` to `to` (exclusive) match.
    pub fn count_in(
        &self,
        from: (usize, usize),
        to: (usize, usize),
        test: impl Fn(Rgb) -> bool,
    ) -> usize {
        (from.1..to.1)
            .flat_map(|y| (from.0..to.0).map(move |x| (x, y)))
            .filter(|&(x, y)| test(Rgb(self.at(x, y))))
            .count()
    }
}

/// Decodes PNG bytes, checking they are 8-bit RGB.
#[cfg(test)]
pub(crate) fn decode_png(bytes: &[u8]) -> Decoded {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight)
    );
    Decoded {
        width: info.width,
        height: info.height,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_labels() {
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(1234.0), "1.2k");
        assert_eq!(compact(12_345.0), "12k");
        assert_eq!(compact(4_000_000.0), "4.0M");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(950), "950");
        assert_eq!(grouped(1500), "1,500");
        assert_eq!(grouped(-123_456), "-123,456");
        assert_eq!(grouped(4_000_000), "4.0M");
    }
}
