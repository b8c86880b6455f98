//! A small RGB canvas for PNG charts: filled rectangles, thick lines, and
//! labels in a built-in 5 x 7 pixel font (digits, a few letters and
//! punctuation), encoded with the `png` crate. No system fonts are needed,
//! so a chart renders the same on every machine.

use std::path::Path;

use crate::error::Error;

/// An RGB colour.
pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];

/// Rows of a glyph, top to bottom; bit 4 is the leftmost pixel.
fn glyph(c: char) -> Option<[u8; 7]> {
    Some(match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        ' ' => [0; 7],
        _ => return None,
    })
}

/// A white canvas of RGB pixels.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width as usize * height as usize * 3],
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return;
        }
        let at = (y as usize * self.width as usize + x as usize) * 3;
        self.pixels[at..at + 3].copy_from_slice(&color);
    }

    /// Fills the rectangle with corner (x, y), clipped to the canvas.
    pub fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, color);
            }
        }
    }

    /// A line `thickness` pixels wide.
    pub fn line(&mut self, from: (i64, i64), to: (i64, i64), thickness: i64, color: Rgb) {
        let steps = (to.0 - from.0).abs().max((to.1 - from.1).abs()).max(1);
        let half = thickness / 2;
        for i in 0..=steps {
            let x = from.0 + (to.0 - from.0) * i / steps;
            let y = from.1 + (to.1 - from.1) * i / steps;
            self.fill_rect(x - half, y - half, thickness, thickness, color);
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel
    /// `scale` pixels square; characters without a glyph are skipped.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: Rgb) {
        let mut cursor = x;
        for c in text.chars() {
            if let Some(rows) = glyph(c) {
                for (row, bits) in rows.iter().enumerate() {
                    for col in 0..5 {
                        if bits & (0x10 >> col) != 0 {
                            self.fill_rect(
                                cursor + col * scale,
                                y + row as i64 * scale,
                                scale,
                                scale,
                                color,
                            );
                        }
                    }
                }
            }
            cursor += 6 * scale;
        }
    }

    /// The width `text` takes at `scale`.
    pub fn text_width(text: &str, scale: i64) -> i64 {
        text.chars().count() as i64 * 6 * scale - scale
    }

    /// The image as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let fail = |source: png::EncodingError| Error::PngEncode { source };
        {
            let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(fail)?;
            writer.write_image_data(&self.pixels).map_err(fail)?;
        }
        Ok(out)
    }

    /// Writes the PNG to `path` (under a temporary name, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let bytes = self.to_png()?;
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
}

/// Whether `path` names a PNG file (by extension).
pub fn is_png(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// Compact numbers for labels: 950, 12.3k, 4M.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_character_has_a_glyph() {
        for c in "0123456789RFMk-.: ".chars() {
            assert!(glyph(c).is_some(), "{c}");
        }
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(1234.0), "1.2k");
        assert_eq!(compact(12_345.0), "12k");
        assert_eq!(compact(4_000_000.0), "4.0M");
    }

    #[test]
    fn png_round_trips() {
        let mut canvas = Canvas::new(20, 10);
        canvas.fill_rect(0, 0, 5, 5, BLACK);
        canvas.text(6, 1, "1", 1, BLACK);
        let bytes = canvas.to_png().unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        assert_eq!((info.width, info.height), (20, 10));
        let dark = buffer.chunks(3).filter(|p| p == &[0, 0, 0]).count();
        // 25 from the square, 10 from the glyph of 1.
        assert_eq!(dark, 25 + 10);
    }
}
