//! Line plots for the evaluation (FD against latency) drawn with `plotters`: PNG through its bitmap backend and
//! the `png` crate, SVG through its SVG backend, text in DejaVu Sans (bundled: `nodes/assets/fonts/`, license
//! beside it) so the output is the same on every machine. Also the RGB [`Canvas`] that the sample grids are drawn
//! into ([`super::grid`]).

use std::path::Path;
use std::sync::Once;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use crate::error::{Error, Result};

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
/// Series colours (matplotlib's tab10).
pub const PALETTE: [Rgb; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core; Bitstream Vera license with public-domain DejaVu changes:
/// `nodes/assets/fonts/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The family every text of the plots and grids uses (the SVG names it too; viewers without DejaVu Sans fall
/// back to their sans-serif).
pub const FAMILY: &str = "DejaVu Sans";

/// Registers the bundled font with plotters (once).
pub fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic] {
            // The file is a valid TTF (checked by the tests); a failure would only leave text out.
            let _ = register_font(FAMILY, style, FONT);
        }
    });
}

fn font_ref() -> &'static FontRef<'static> {
    static F: std::sync::OnceLock<FontRef<'static>> = std::sync::OnceLock::new();
    F.get_or_init(|| FontRef::try_from_slice(FONT).expect("the bundled DejaVu Sans parses"))
}

/// plotters' bitmap backend with its text drawn here, through ab_glyph directly: plotters 0.3.7's ab_glyph
/// text path drops each glyph's left side bearing, which spaces letters unevenly ("lab els"). Layout (the
/// width plotters measures, anchors, rotation) is plotters'; glyphs are placed at their kerned advances.
pub struct Raster<'a>(BitMapBackend<'a>);

type RasterError<'a> = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

impl<'a> DrawingBackend for Raster<'a> {
    type ErrorType = RasterError<'a>;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let font = font_ref();
        let scale = PxScale::from(style.size() as f32);
        let sf = font.as_scaled(scale);
        let mut x = 0f32;
        let mut prev = None;
        let mut glyphs = Vec::new();
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                x += sf.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, ab_glyph::point(x, sf.ascent())));
            x += sf.h_advance(id);
            prev = Some(id);
        }
        // The box plotters lays out: the advance width by the size over 1.24.
        let (width, height) = (x.round() as i32, (style.size() / 1.24) as i32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        // Glyphs sit with their ascent at the top of that box.
        let lift = ((sf.ascent() - height as f32) / 2.0).round() as i32;
        let trans = style.transform();
        let mut px = Vec::new();
        for g in glyphs {
            if let Some(o) = font.outline_glyph(g) {
                let b = o.px_bounds();
                o.draw(|gx, gy, cov| {
                    if cov > 0.0 {
                        let x = b.min.x as i32 + gx as i32 + dx;
                        let y = b.min.y as i32 + gy as i32 + dy - lift;
                        px.push((trans.transform(x, y), cov));
                    }
                });
            }
        }
        let (w, h) = self.get_size();
        for ((x, y), cov) in px {
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && y >= 0 && x < w as i32 && y < h as i32 {
                let c = BackendColor {
                    alpha: color.alpha * cov.min(1.0) as f64,
                    rgb: color.rgb,
                };
                self.0.draw_pixel((x, y), c)?;
            }
        }
        Ok(())
    }
}

fn rgb(c: Rgb) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> Error {
    Error::invalid(format!("plot: {e}"))
}

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

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let o = (y * self.width + x) * 3;
        [self.rgb[o], self.rgb[o + 1], self.rgb[o + 2]]
    }

    pub fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        let (x0, y0) = (x.max(0) as usize, y.max(0) as usize);
        let x1 = ((x + w).max(0) as usize).min(self.width);
        let y1 = ((y + h).max(0) as usize).min(self.height);
        for yy in y0..y1 {
            for xx in x0..x1 {
                let o = (yy * self.width + xx) * 3;
                self.rgb[o..o + 3].copy_from_slice(&c);
            }
        }
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

    /// Draws on the canvas with plotters (text in the bundled font).
    pub fn draw<F>(&mut self, f: F) -> Result<()>
    where
        F: FnOnce(&DrawingArea<Raster<'_>, Shift>) -> Result<()>,
    {
        fonts();
        let size = (self.width as u32, self.height as u32);
        let root = Raster(BitMapBackend::with_buffer(&mut self.rgb, size)).into_drawing_area();
        f(&root)?;
        root.present().map_err(draw_err)?;
        Ok(())
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

/// A line plot: markers joined by lines, one colour per series, a legend, linear or log10 axes.
#[derive(Debug, Clone)]
pub struct LinePlot {
    pub title: String,
    /// Axis titles, with their units.
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Horizontal reference lines (value, label), drawn dashed and listed in the legend.
    pub h_lines: Vec<(f64, String)>,
    /// A line in the lower left of the axes explaining the point labels (e.g. "numbers: Euler steps T"); may be empty.
    pub point_label_note: String,
}

/// Short tick text: integers without decimals, small numbers with up to 3 significant digits.
pub fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..100_000.0).contains(&a) {
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

/// The range an axis shows: the data and reference lines, padded (a factor on a log axis).
fn axis_range(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        let (l, h) = (lo.log10(), hi.log10());
        // At least 0.7 decades, so that two 1-2-5 ticks fall inside (one point alone too).
        let pad = ((h - l) * 0.06).max((0.7 - (h - l)) / 2.0).max(0.05);
        (10f64.powf(l - pad), 10f64.powf(h + pad))
    } else {
        let span = (hi - lo).max(1e-9);
        let lo = if from_zero && lo >= 0.0 {
            0.0
        } else {
            lo - 0.05 * span
        };
        (lo, hi + 0.08 * span)
    }
}

/// Tick values of a log axis: 1, 2, 5 times the powers of ten inside (lo, hi) (1 and 10 only when that is
/// plenty).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let mults: &[f64] = if decades > 2.5 {
        &[1.0, 3.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut out = Vec::new();
    let mut e = lo.log10().floor() as i32;
    while 10f64.powi(e) <= hi {
        for m in mults {
            let v = m * 10f64.powi(e);
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        e += 1;
    }
    out
}

impl LinePlot {
    /// Writes `PREFIX.png` (`width x height` pixels) and `PREFIX.svg` beside it (the suffixes are appended:
    /// a prefix may hold dots, as in `fashion-dit-w1.5`).
    pub fn save(&self, prefix: &Path, width: u32, height: u32) -> Result<()> {
        let with = |ext: &str| {
            let mut s = prefix.as_os_str().to_owned();
            s.push(".");
            s.push(ext);
            std::path::PathBuf::from(s)
        };
        self.render(width as usize, height as usize)?
            .save_png(&with("png"))?;
        self.save_svg(&with("svg"), width, height)
    }

    /// Renders the plot into a `width x height` RGB canvas.
    pub fn render(&self, width: usize, height: usize) -> Result<Canvas> {
        let mut cv = Canvas::new(width, height, WHITE);
        cv.draw(|root| self.draw_on(root))?;
        Ok(cv)
    }

    /// Writes the plot as SVG.
    pub fn save_svg(&self, path: &Path, width: u32, height: u32) -> Result<()> {
        fonts();
        let root = SVGBackend::new(path, (width, height)).into_drawing_area();
        self.draw_on(&root)?;
        root.present().map_err(draw_err)?;
        Ok(())
    }

    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE_C).map_err(draw_err)?;
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(self.h_lines.iter().map(|h| h.0));
        let (x0, x1) = axis_range(xs, self.log_x, false);
        let (y0, y1) = axis_range(ys, self.log_y, true);
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(&self.title, (FAMILY, 22).into_font())
            .margin(14)
            .margin_right(24)
            .x_label_area_size(52)
            .y_label_area_size(64);
        // The four axis kinds are four chart types; one generic body draws them all.
        match (self.log_x, self.log_y) {
            (true, true) => {
                let c = builder
                    .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                    .map_err(draw_err)?;
                self.draw_chart(root, c, (x0, x1), (y0, y1))
            }
            (true, false) => {
                let c = builder
                    .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                    .map_err(draw_err)?;
                self.draw_chart(root, c, (x0, x1), (y0, y1))
            }
            (false, true) => {
                let c = builder
                    .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                    .map_err(draw_err)?;
                self.draw_chart(root, c, (x0, x1), (y0, y1))
            }
            (false, false) => {
                let c = builder
                    .build_cartesian_2d(x0..x1, y0..y1)
                    .map_err(draw_err)?;
                self.draw_chart(root, c, (x0, x1), (y0, y1))
            }
        }
    }

    fn draw_chart<'a, DB, X, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        mut chart: ChartContext<'a, DB, Cartesian2d<X, Y>>,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
    ) -> Result<()>
    where
        DB: DrawingBackend + 'a,
        DB::ErrorType: 'static,
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let label_font = (FAMILY, 15).into_font();
        let tick_font = (FAMILY, 13).into_font();
        let fmt = |v: &f64| fmt_tick(*v);
        // A log axis gets its labels at the 1-2-5 (or 1-3) ticks, drawn below; plotters' own are blanked.
        let blank = |_: &f64| String::new();
        let x_ticks = if self.log_x {
            log_ticks(x0, x1)
        } else {
            Vec::new()
        };
        let y_ticks = if self.log_y {
            log_ticks(y0, y1)
        } else {
            Vec::new()
        };
        {
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .axis_desc_style(label_font.clone())
                .label_style(tick_font.clone())
                .x_label_formatter(if self.log_x { &blank } else { &fmt })
                .y_label_formatter(if self.log_y { &blank } else { &fmt })
                .light_line_style(RGBColor(238, 238, 238))
                .bold_line_style(RGBColor(214, 214, 214))
                .axis_style(RGBColor(60, 60, 60));
            if self.log_x || self.log_y {
                // Log axes: the grid and the marks at the 1-2-5 ticks only, drawn below.
                mesh.disable_mesh().set_all_tick_mark_size(0);
            }
            mesh.draw().map_err(draw_err)?;
        }
        let grid = RGBColor(220, 220, 220);
        for &v in &x_ticks {
            chart
                .draw_series(LineSeries::new([(v, y0), (v, y1)], grid))
                .map_err(draw_err)?;
        }
        for &v in &y_ticks {
            chart
                .draw_series(LineSeries::new([(x0, v), (x1, v)], grid))
                .map_err(draw_err)?;
        }
        let ink = RGBColor(40, 40, 40);
        for &v in &x_ticks {
            let (px, py) = chart.backend_coord(&(v, y0));
            let style = tick_font
                .clone()
                .color(&ink)
                .pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(fmt_tick(v), (px, py + 6), style))
                .map_err(draw_err)?;
            root.draw(&PathElement::new([(px, py), (px, py + 4)], ink))
                .map_err(draw_err)?;
        }
        for &v in &y_ticks {
            let (px, py) = chart.backend_coord(&(x0, v));
            let style = tick_font
                .clone()
                .color(&ink)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(fmt_tick(v), (px - 8, py), style))
                .map_err(draw_err)?;
            root.draw(&PathElement::new([(px - 4, py), (px, py)], ink))
                .map_err(draw_err)?;
        }
        for (v, label) in &self.h_lines {
            let grey = RGBColor(110, 110, 110);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0, *v), (x1, *v)],
                    6,
                    4,
                    grey.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new([(0, 0), (8, 0)], grey.stroke_width(2))
                        + PathElement::new([(12, 0), (20, 0)], grey.stroke_width(2))
                });
        }
        for (k, s) in self.series.iter().enumerate() {
            let c = rgb(PALETTE[k % PALETTE.len()]);
            let ok: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| {
                    x.is_finite()
                        && y.is_finite()
                        && (!self.log_x || *x > 0.0)
                        && (!self.log_y || *y > 0.0)
                })
                .collect();
            chart
                .draw_series(LineSeries::new(ok.iter().copied(), c.stroke_width(2)))
                .map_err(draw_err)?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new([(0, 0), (20, 0)], c.stroke_width(2))
                        + Circle::new((10, 0), 4, c.filled())
                });
            chart
                .draw_series(
                    ok.iter()
                        .map(|&p| Circle::new(p, 4, c.filled().stroke_width(1))),
                )
                .map_err(draw_err)?;
            let small = (FAMILY, 12).into_font().color(&c);
            chart
                .draw_series(ok.iter().zip(&s.point_labels).map(|(&p, t)| {
                    EmptyElement::at(p) + Text::new(t.clone(), (5, -16), small.clone())
                }))
                .map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE_C.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FAMILY, 14).into_font())
            .margin(10)
            .draw()
            .map_err(draw_err)?;
        if !self.point_label_note.is_empty() {
            // Lower left, inside the axes (above a reference line drawn along the bottom).
            let area = chart.plotting_area().strip_coord_spec();
            let (_, h) = area.dim_in_pixel();
            let note = (FAMILY, 13).into_font().color(&RGBColor(90, 90, 90));
            area.draw(&Text::new(
                self.point_label_note.clone(),
                (12, h as i32 - 44),
                note,
            ))
            .map_err(draw_err)?;
        }
        Ok(())
    }
}

const WHITE_C: RGBColor = RGBColor(255, 255, 255);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_well() {
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(40.0), "40");
        assert_eq!(fmt_tick(0.05), "0.05");
        assert_eq!(fmt_tick(1000.0), "1000");
        assert_eq!(log_ticks(0.7, 30.0), vec![1.0, 2.0, 5.0, 10.0, 20.0]);
        assert_eq!(
            log_ticks(0.5, 600.0),
            vec![1.0, 3.0, 10.0, 30.0, 100.0, 300.0]
        );
    }

    #[test]
    fn the_bundled_font_parses() {
        assert!(register_font("odelt-test", FontStyle::Normal, FONT).is_ok());
    }

    fn plot() -> LinePlot {
        LinePlot {
            title: "ODE_t(ODE_l): FD vs latency".into(),
            x_label: "latency (CPU ms per image)".into(),
            y_label: "FD".into(),
            log_x: true,
            log_y: true,
            series: vec![
                Series {
                    label: "l = 6".into(),
                    points: vec![(1.0, 30.0), (2.0, 20.0), (8.0, 10.0)],
                    point_labels: vec!["1".into(), "2".into(), "8".into()],
                },
                Series {
                    label: "l = 2".into(),
                    points: vec![(0.4, 40.0), (0.8, 35.0)],
                    point_labels: vec![],
                },
            ],
            h_lines: vec![(2.0, "real vs real".into())],
            point_label_note: "numbers: steps T".into(),
        }
    }

    #[test]
    fn plot_png_and_svg_have_text_and_the_series() {
        let dir = std::env::temp_dir().join(format!("odelt-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = plot();
        p.save(&dir.join("p-w1.5"), 640, 420).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(dir.join("p-w1.5.png")).unwrap(),
        ));
        let r = dec.read_info().unwrap();
        assert_eq!((r.info().width, r.info().height), (640, 420));
        let cv = p.render(640, 420).unwrap();
        // A series colour and anti-aliased (grey, not black or white) text pixels.
        let px = |c: Rgb| (0..cv.height).any(|y| (0..cv.width).any(|x| cv.get(x, y) == c));
        assert!(px(PALETTE[0]) && px(PALETTE[1]));
        let svg = std::fs::read_to_string(dir.join("p-w1.5.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        for text in [
            "l = 6",
            "l = 2",
            "real vs real",
            "ODE_t(ODE_l): FD vs latency",
        ] {
            assert!(svg.contains(text), "{text} missing from the SVG");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn linear_axes_render_too() {
        let mut p = plot();
        p.log_x = false;
        p.log_y = false;
        let cv = p.render(400, 300).unwrap();
        assert_eq!((cv.width, cv.height), (400, 300));
    }
}
