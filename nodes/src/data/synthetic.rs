//! A tiny synthetic labelled image set for tests: class `k` is a bright horizontal bar at a class-specific row
//! (plus a little noise) on a dark background, so a model or a classifier can learn it in a few steps.

use rand::{Rng, SeedableRng};

use super::ImageSet;

/// `n` images of `size x size x 1` in \[-1, 1\] over `classes` classes, deterministic for `seed`.
pub fn bars(n: usize, size: usize, classes: usize, seed: u64) -> ImageSet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(n * size * size);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % classes;
        let row = (k * size) / classes.max(1);
        for r in 0..size {
            for _c in 0..size {
                let base = if r == row { 0.9 } else { -0.9 };
                pixels.push(base + rng.random_range(-0.05f32..0.05));
            }
        }
        labels.push(k as u32);
    }
    ImageSet {
        pixels,
        labels,
        size,
        channels: 1,
        num_classes: classes,
        class_names: (0..classes).map(|k| format!("bar{k}")).collect(),
    }
}
