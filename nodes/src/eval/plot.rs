//! A small raster plotting module: an RGB canvas with lines, markers, rectangles and bitmap text, a line plot with
//! axes, ticks and a legend, and PNG output through the `png` crate.

use std::path::Path;

use super::font::{glyph, text_width, GLYPH_H, GLYPH_W};
use crate::error::{Error, Result};

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [200, 200, 200];
/// Series colours (tab10-like).
pub const PALETTE: [Rgb; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

/// An RGB image in memory.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, bg: Rgb) -> Self {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            rgb.extend_from_slice(&bg);
        }
        Canvas { width, height, rgb }
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let o = (y as usize * self.width + x as usize) * 3;
            self.rgb[o..o + 3].copy_from_slice(&c);
        }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let o = (y * self.width + x) * 3;
        [self.rgb[o], self.rgb[o + 1], self.rgb[o + 2]]
    }

    pub fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// A line of `thickness` pixels (Bresenham, stamped with a square brush).
    pub fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, thickness: usize, c: Rgb) {
        let (mut x, mut y) = (x0.round() as i64, y0.round() as i64);
        let (xe, ye) = (x1.round() as i64, y1.round() as i64);
        let dx = (xe - x).abs();
        let dy = -(ye - y).abs();
        let sx = if x < xe { 1 } else { -1 };
        let sy = if y < ye { 1 } else { -1 };
        let mut err = dx + dy;
        let r = thickness as i64 / 2;
        let w = thickness.max(1) as i64;
        loop {
            self.fill_rect(x - r, y - r, w, w, c);
            if x == xe && y == ye {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A filled disc marker.
    pub fn disc(&mut self, cx: f64, cy: f64, radius: f64, c: Rgb) {
        let r = radius.ceil() as i64;
        let (x0, y0) = (cx.round() as i64, cy.round() as i64);
        for dy in -r..=r {
            for dx in -r..=r {
                if ((dx * dx + dy * dy) as f64) <= radius * radius {
                    self.set(x0 + dx, y0 + dy, c);
                }
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel a `scale x scale` square.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: Rgb) {
        let s = scale.max(1) as i64;
        let mut cx = x;
        for ch in text.chars() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                        self.fill_rect(cx + col as i64 * s, y + row as i64 * s, s, s, c);
                    }
                }
            }
            cx += (GLYPH_W as i64 + 1) * s;
        }
    }

    /// `text` centred horizontally on `cx`.
    pub fn text_centered(&mut self, cx: i64, y: i64, text: &str, scale: usize, c: Rgb) {
        let w = text_width(text, scale) as i64;
        self.text(cx - w / 2, y, text, scale, c);
    }

    /// Copies a grey-scale image (values in \[-1, 1\], row-major `h x w`) scaled up by `zoom` to (x, y).
    pub fn blit_grey(&mut self, x: i64, y: i64, img: &[f32], w: usize, h: usize, zoom: usize) {
        for r in 0..h {
            for col in 0..w {
                let v = ((img[r * w + col].clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                self.fill_rect(
                    x + (col * zoom) as i64,
                    y + (r * zoom) as i64,
                    zoom as i64,
                    zoom as i64,
                    [v, v, v],
                );
            }
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::create(path).map_err(io)?;
        let mut enc = png::Encoder::new(
            std::io::BufWriter::new(f),
            self.width as u32,
            self.height as u32,
        );
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| Error::invalid(format!("{}: PNG header: {e}", path.display())))?;
        w.write_image_data(&self.rgb)
            .map_err(|e| Error::invalid(format!("{}: PNG data: {e}", path.display())))?;
        w.finish()
            .map_err(|e| Error::invalid(format!("{}: PNG finish: {e}", path.display())))?;
        Ok(())
    }
}

/// One curve.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Optional text drawn next to each point (e.g. the step count).
    pub point_labels: Vec<String>,
}

/// A line plot with linear y and linear or log10 x.
#[derive(Debug, Clone)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    /// Horizontal reference lines (value, label), drawn dashed.
    pub h_lines: Vec<(f64, String)>,
}

/// About `n` "nice" tick values covering [lo, hi].
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(hi > lo) {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + 1e-9 * step {
        out.push(if v.abs() < 1e-12 * step { 0.0 } else { v });
        v += step;
    }
    out
}

/// Short tick text: integers without decimals, small numbers with up to 3 significant digits.
pub fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 1000.0 || a < 1e-3 {
        return format!("{v:.0e}");
    }
    if (v - v.round()).abs() < 1e-9 {
        return format!("{}", v.round() as i64);
    }
    let s = if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl LinePlot {
    /// Renders the plot into a `width x height` canvas.
    pub fn render(&self, width: usize, height: usize) -> Canvas {
        let mut cv = Canvas::new(width, height, WHITE);
        let (ml, mr, mt, mb) = (70i64, 20i64, 36i64, 50i64);
        let (pw, ph) = (width as i64 - ml - mr, height as i64 - mt - mb);
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let tx = |x: f64| if self.log_x { x.max(1e-300).log10() } else { x };
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            if x.is_finite() && y.is_finite() {
                x0 = x0.min(tx(x));
                x1 = x1.max(tx(x));
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        for (v, _) in &self.h_lines {
            y0 = y0.min(*v);
            y1 = y1.max(*v);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        if y1 - y0 < 1e-12 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        let padx = 0.05 * (x1 - x0);
        let (x0, x1) = (x0 - padx, x1 + padx);
        let y0 = if y0 >= 0.0 {
            0.0
        } else {
            y0 - 0.05 * (y1 - y0)
        };
        let y1 = y1 + 0.08 * (y1 - y0);
        let px = |x: f64| ml as f64 + (tx(x) - x0) / (x1 - x0) * pw as f64;
        let py = |y: f64| mt as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph as f64;

        // Grid and ticks.
        let yt = nice_ticks(y0, y1, 6);
        for &v in &yt {
            let y = py(v);
            cv.line(ml as f64, y, (ml + pw) as f64, y, 1, GREY);
            let s = fmt_tick(v);
            cv.text(
                ml - 6 - text_width(&s, 1) as i64,
                y as i64 - 3,
                &s,
                1,
                BLACK,
            );
        }
        let xt: Vec<f64> = if self.log_x {
            let mut v = Vec::new();
            let mut e = x0.floor();
            while e <= x1 {
                for m in [1.0, 2.0, 5.0] {
                    let l = e + f64::log10(m);
                    if l >= x0 && l <= x1 {
                        v.push(10f64.powf(l));
                    }
                }
                e += 1.0;
            }
            v
        } else {
            nice_ticks(x0, x1, 6)
        };
        for &v in &xt {
            let x = px(v);
            cv.line(x, mt as f64, x, (mt + ph) as f64, 1, GREY);
            cv.text_centered(x as i64, mt + ph + 6, &fmt_tick(v), 1, BLACK);
        }
        // Reference lines (dashed).
        for (k, (v, label)) in self.h_lines.iter().enumerate() {
            let y = py(*v);
            let mut x = ml as f64;
            while x < (ml + pw) as f64 {
                cv.line(x, y, (x + 6.0).min((ml + pw) as f64), y, 1, [90, 90, 90]);
                x += 12.0;
            }
            cv.text(
                ml + 6,
                y as i64 - 10 - 10 * k as i64,
                label,
                1,
                [90, 90, 90],
            );
        }
        // Axes box.
        cv.line(ml as f64, mt as f64, ml as f64, (mt + ph) as f64, 1, BLACK);
        cv.line(
            ml as f64,
            (mt + ph) as f64,
            (ml + pw) as f64,
            (mt + ph) as f64,
            1,
            BLACK,
        );
        cv.line(
            (ml + pw) as f64,
            mt as f64,
            (ml + pw) as f64,
            (mt + ph) as f64,
            1,
            BLACK,
        );
        cv.line(ml as f64, mt as f64, (ml + pw) as f64, mt as f64, 1, BLACK);
        // Series.
        for (k, s) in self.series.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            let ok: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            for w in ok.windows(2) {
                cv.line(px(w[0].0), py(w[0].1), px(w[1].0), py(w[1].1), 2, c);
            }
            for (i, &(x, y)) in ok.iter().enumerate() {
                cv.disc(px(x), py(y), 3.5, c);
                if let Some(t) = s.point_labels.get(i) {
                    cv.text(px(x) as i64 + 5, py(y) as i64 - 10, t, 1, c);
                }
            }
        }
        // Titles.
        cv.text_centered(width as i64 / 2, 10, &self.title, 2, BLACK);
        cv.text_centered(ml + pw / 2, mt + ph + 24, &self.x_label, 1, BLACK);
        // Vertical y label: written letter by letter down the left margin.
        let yl: Vec<char> = self.y_label.chars().collect();
        let top = mt + ph / 2 - (yl.len() as i64 * (GLYPH_H as i64 + 2)) / 2;
        for (i, ch) in yl.iter().enumerate() {
            cv.text(
                6,
                top + i as i64 * (GLYPH_H as i64 + 2),
                &ch.to_string(),
                1,
                BLACK,
            );
        }
        // Legend (top right).
        let lw = self
            .series
            .iter()
            .map(|s| text_width(&s.label, 1))
            .max()
            .unwrap_or(0) as i64
            + 34;
        let lx = ml + pw - lw - 8;
        let ly = mt + 8;
        cv.fill_rect(
            lx - 4,
            ly - 4,
            lw + 8,
            self.series.len() as i64 * 14 + 6,
            WHITE,
        );
        for (k, s) in self.series.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            let y = ly + k as i64 * 14 + 4;
            cv.line(lx as f64, y as f64, (lx + 20) as f64, y as f64, 2, c);
            cv.disc((lx + 10) as f64, y as f64, 3.0, c);
            cv.text(lx + 28, y - 3, &s.label, 1, BLACK);
        }
        cv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(40.0), "40");
        assert_eq!(fmt_tick(0.05), "0.05");
    }

    #[test]
    fn plot_png_decodes_with_right_size() {
        let p = LinePlot {
            title: "FD vs latency".into(),
            x_label: "latency (ms/image)".into(),
            y_label: "FD".into(),
            log_x: true,
            series: vec![
                Series {
                    label: "l=6".into(),
                    points: vec![(1.0, 30.0), (2.0, 20.0), (8.0, 10.0)],
                    point_labels: vec!["T1".into(), "T2".into(), "T8".into()],
                },
                Series {
                    label: "l=2".into(),
                    points: vec![(0.4, 40.0), (0.8, 35.0)],
                    point_labels: vec![],
                },
            ],
            h_lines: vec![(2.0, "real vs real".into())],
        };
        let cv = p.render(640, 420);
        // Something was drawn in a series colour.
        assert!((0..cv.height).any(|y| (0..cv.width).any(|x| cv.get(x, y) == PALETTE[0])));
        let dir = std::env::temp_dir().join(format!("odelt-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.png");
        cv.save_png(&path).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let r = dec.read_info().unwrap();
        assert_eq!((r.info().width, r.info().height), (640, 420));
        std::fs::remove_dir_all(&dir).ok();
    }
}
