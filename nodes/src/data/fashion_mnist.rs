//! Fashion-MNIST (Zalando, MIT) from the Debian package `dataset-fashion-mnist`:
//! `/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`.

use std::path::{Path, PathBuf};

use super::{idx, ImageSet};
use crate::error::{Error, Result};

/// Where the Debian package installs the files.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The ten class names, in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which split to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::invalid(format!(
        "Fashion-MNIST file {stem}(.gz) not found in {} (install it with `apt-get install dataset-fashion-mnist` \
         or pass --data DIR)",
        dir.display()
    )))
}

/// Loads a split as 28x28x1 images in \[-1, 1\] (`x / 127.5 - 1`) with labels 0..9.
pub fn load(dir: &Path, split: Split) -> Result<ImageSet> {
    let p = split.prefix();
    let images = idx::read(&find(dir, &format!("{p}-images-idx3-ubyte"))?)?;
    let labels = idx::read(&find(dir, &format!("{p}-labels-idx1-ubyte"))?)?;
    if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
        return Err(Error::invalid(format!(
            "Fashion-MNIST {p}: images {:?} and labels {:?} do not match",
            images.dims, labels.dims
        )));
    }
    if images.dims[1] != images.dims[2] {
        return Err(Error::invalid(format!(
            "Fashion-MNIST {p}: non-square images {:?}",
            images.dims
        )));
    }
    let set = ImageSet {
        pixels: images
            .data
            .iter()
            .map(|&v| v as f32 / 127.5 - 1.0)
            .collect(),
        labels: labels.data.iter().map(|&v| v as u32).collect(),
        size: images.dims[1],
        channels: 1,
        num_classes: 10,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    set.validate()?;
    Ok(set)
}
