//! A labelled grid of class-conditional samples: one column per class, its name written above it; and the samples
//! of `odelt-model grid` ([`grid_samples`]).

use candle_core::Tensor;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot::{fonts, Canvas, FAMILY, WHITE};
use crate::error::{Error, Result};
use crate::model::Dit;
use crate::sample::{sample_seeded, SampleOptions, SeededBatch, Start};

/// The samples of a grid of `rows` x `num_classes`: sample `i` has class `i % num_classes` and noise stream `i`
/// of `seed` (one batch through [`sample_seeded`]), so the first row is what the sampler node gives for a batch
/// of `num_classes` with `class_labels` `0,1,…` and the same seed, solver, guidance and length. `step_code`: see
/// [`SeededBatch::step_code`]. Returns the NHWC `[rows·num_classes, S, S, C]` model-space latent.
pub fn grid_samples(
    model: &Dit,
    rows: usize,
    seed: u64,
    opts: SampleOptions,
    step_code: Option<f64>,
) -> Result<Tensor> {
    if rows == 0 {
        return Err(Error::invalid("a grid needs at least 1 row"));
    }
    let k = model.config().num_classes;
    let labels: Vec<u32> = (0..rows * k).map(|i| (i % k) as u32).collect();
    let y = Tensor::from_vec(labels, rows * k, model.device())?;
    let batch = SeededBatch {
        seed,
        first: 0,
        labels: &y,
        start: Start::Noise,
        opts,
        step_code,
    };
    Ok(sample_seeded(model, &batch, &mut ())?.0)
}

/// Size of the class names and of the title, in pixels.
const NAME_PX: f64 = 13.0;
const TITLE_PX: f64 = 16.0;

fn text_size(text: &str, px: f64) -> (usize, usize) {
    fonts();
    (FAMILY, px)
        .into_font()
        .box_size(text)
        .map(|(w, h)| (w as usize, h as usize))
        .unwrap_or((text.chars().count() * px as usize / 2, px as usize))
}

/// Lays out `images` (row-major over rows x classes, each `size x size` grey in \[-1, 1\]) under `class_names`,
/// with `title` (e.g. "T = 8, l = 6, w = 1") above; text in the bundled DejaVu Sans.
pub fn labelled_grid(
    images: &[f32],
    size: usize,
    classes: usize,
    rows: usize,
    class_names: &[String],
    zoom: usize,
    title: &str,
) -> Result<Canvas> {
    if images.len() != rows * classes * size * size {
        return Err(Error::invalid(format!(
            "grid: {} values for {rows}x{classes} images of {size}x{size}",
            images.len()
        )));
    }
    let gap = 4usize;
    let tile = size * zoom;
    let name_w = class_names
        .iter()
        .map(|n| text_size(n, NAME_PX).0)
        .max()
        .unwrap_or(0);
    let col_w = tile.max(name_w + 6) + gap;
    let line = |px: f64| (px * 1.5).ceil() as usize;
    let title_h = if title.is_empty() {
        0
    } else {
        line(TITLE_PX) + 4
    };
    let head = title_h + line(NAME_PX) + 4;
    let width = classes * col_w + gap;
    let height = head + rows * (tile + gap) + gap;
    let mut cv = Canvas::new(width, height, WHITE);
    for k in 0..classes {
        let cx = (gap + k * col_w + (col_w - gap) / 2) as i64;
        for r in 0..rows {
            let idx = r * classes + k;
            let img = &images[idx * size * size..(idx + 1) * size * size];
            let x = cx - (tile / 2) as i64;
            let y = (head + r * (tile + gap)) as i64;
            cv.blit_grey(x, y, img, size, size, zoom);
        }
    }
    let ink = RGBColor(20, 20, 20);
    cv.draw(|root| {
        let err = |e: DrawingAreaErrorKind<_>| Error::invalid(format!("grid text: {e}"));
        let centred = |px: f64| {
            (FAMILY, px)
                .into_font()
                .color(&ink)
                .pos(Pos::new(HPos::Center, VPos::Top))
        };
        if !title.is_empty() {
            root.draw(&Text::new(
                title.to_string(),
                (width as i32 / 2, 4),
                centred(TITLE_PX),
            ))
            .map_err(err)?;
        }
        for (k, n) in class_names.iter().take(classes).enumerate() {
            let cx = (gap + k * col_w + (col_w - gap) / 2) as i32;
            root.draw(&Text::new(
                n.clone(),
                (cx, title_h as i32 + 3),
                centred(NAME_PX),
            ))
            .map_err(err)?;
        }
        Ok(())
    })?;
    Ok(cv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_png_has_expected_size_and_pixels() {
        let names: Vec<String> = ["a", "Bb", "Ankle boot"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let imgs: Vec<f32> = (0..2 * 3 * 16)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let cv = labelled_grid(&imgs, 4, 3, 2, &names, 3, "T = 8, l = 6").unwrap();
        let (w, _) = text_size("Ankle boot", NAME_PX);
        assert!(w > 40, "{w}: the name is measured in the real font");
        let col_w = 12usize.max(w + 6) + 4;
        assert_eq!(cv.width, 3 * col_w + 4);
        assert_eq!(cv.height, (24 + 4) + (20 + 4) + 2 * (12 + 4) + 4);
        // Text was drawn (dark pixels in the header), the images below it.
        assert!((0..24).any(|y| (0..cv.width).any(|x| cv.get(x, y)[0] < 100)));
        let dir = std::env::temp_dir().join(format!("odelt-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("g.png");
        cv.save_png(&p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let r = dec.read_info().unwrap();
        assert_eq!(
            (r.info().width as usize, r.info().height as usize),
            (cv.width, cv.height)
        );
        assert!(labelled_grid(&imgs[1..], 4, 3, 2, &names, 3, "").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
