//! Image data for training and evaluation: the IDX reader (MNIST-style files), Fashion-MNIST from the Debian
//! package `dataset-fashion-mnist`, and a tiny synthetic set for tests.

pub mod fashion_mnist;
pub mod idx;
pub mod synthetic;

use rand::Rng;

use crate::error::{Error, Result};

/// A labelled image set held in memory: NHWC `f32` pixels scaled to \[-1, 1\].
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// `n * size * size * channels` values, image-major, NHWC.
    pub pixels: Vec<f32>,
    /// One class id per image.
    pub labels: Vec<u32>,
    pub size: usize,
    pub channels: usize,
    pub num_classes: usize,
    /// Class names for display (may be empty).
    pub class_names: Vec<String>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.size * self.size * self.channels
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Checks that pixels, labels and shape agree.
    pub fn validate(&self) -> Result<()> {
        if self.pixels.len() != self.len() * self.image_len() {
            return Err(Error::invalid(format!(
                "image set: {} pixel values for {} images of {}x{}x{}",
                self.pixels.len(),
                self.len(),
                self.size,
                self.size,
                self.channels
            )));
        }
        if let Some(&bad) = self
            .labels
            .iter()
            .find(|&&l| l as usize >= self.num_classes)
        {
            return Err(Error::invalid(format!(
                "image set: label {bad} outside 0..{}",
                self.num_classes
            )));
        }
        Ok(())
    }

    /// The first `n` images (or all).
    pub fn take(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..self.clone_meta()
        }
    }

    fn clone_meta(&self) -> ImageSet {
        ImageSet {
            pixels: Vec::new(),
            labels: Vec::new(),
            size: self.size,
            channels: self.channels,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        }
    }

    /// Gathers images `idx` into a flat NHWC buffer and their labels.
    pub fn gather(&self, idx: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let n = self.image_len();
        let mut px = Vec::with_capacity(idx.len() * n);
        let mut lb = Vec::with_capacity(idx.len());
        for &i in idx {
            px.extend_from_slice(self.image(i));
            lb.push(self.labels[i]);
        }
        (px, lb)
    }
}

/// Epoch-wise shuffled batches without replacement: deterministic for an rng, resumable from a position.
#[derive(Debug, Clone)]
pub struct Shuffler {
    n: usize,
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
    pos: usize,
}

impl Shuffler {
    /// A shuffler over `n` items whose epoch `e` permutation depends only on `(seed, e)`.
    pub fn new(n: usize, seed: u64) -> Self {
        let mut s = Shuffler {
            n,
            seed,
            epoch: 0,
            order: Vec::new(),
            pos: 0,
        };
        s.reshuffle();
        s
    }

    fn reshuffle(&mut self) {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(0x5eed_0000 + self.epoch);
        self.order = (0..self.n).collect();
        for i in (1..self.n).rev() {
            let j = rng.random_range(0..=i);
            self.order.swap(i, j);
        }
        self.pos = 0;
    }

    /// The next `b` indices (crossing epochs as needed).
    pub fn next_batch(&mut self, b: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(b);
        while out.len() < b {
            if self.pos >= self.n {
                self.epoch += 1;
                self.reshuffle();
            }
            out.push(self.order[self.pos]);
            self.pos += 1;
        }
        out
    }

    /// Fast-forwards to the state after `batches` batches of size `b` (for resuming).
    pub fn skip(&mut self, batches: u64, b: usize) {
        let total = batches * b as u64;
        self.epoch = total / self.n as u64;
        self.reshuffle();
        self.pos = (total % self.n as u64) as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffler_resume_matches_continuous_run() {
        let mut a = Shuffler::new(10, 3);
        let seq: Vec<Vec<usize>> = (0..7).map(|_| a.next_batch(4)).collect();
        let mut b = Shuffler::new(10, 3);
        b.skip(5, 4);
        assert_eq!(b.next_batch(4), seq[5]);
        assert_eq!(b.next_batch(4), seq[6]);
        let mut first: Vec<usize> = seq[0].iter().chain(&seq[1]).copied().collect();
        first.extend_from_slice(&seq[2][..2]);
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
    }
}
