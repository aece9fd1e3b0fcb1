//! Helpers shared by the subcommands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use odelt_nodes::data::{fashion_mnist, synthetic, ImageSet};

/// Where the images come from.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Directory with the Fashion-MNIST IDX files.
    #[arg(long, default_value = fashion_mnist::DEFAULT_DIR)]
    pub data: PathBuf,
    /// Use N synthetic 28x28 "bar" images (10 classes) instead of Fashion-MNIST (tests, smoke runs).
    #[arg(long)]
    pub synthetic: Option<usize>,
}

impl DataArgs {
    pub fn load(&self, split: fashion_mnist::Split) -> Result<ImageSet> {
        if let Some(n) = self.synthetic {
            let seed = if split == fashion_mnist::Split::Train {
                1
            } else {
                2
            };
            return Ok(synthetic::bars(n, 28, 10, seed));
        }
        fashion_mnist::load(&self.data, split)
            .with_context(|| format!("loading Fashion-MNIST from {}", self.data.display()))
    }
}

pub fn ensure_parent(p: &Path) -> Result<()> {
    if let Some(d) = p.parent() {
        if !d.as_os_str().is_empty() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    Ok(())
}

/// `PREFIX.ext` for an output prefix. Unlike `Path::with_extension`, keeps dots that belong to the prefix
/// (`runs/w1.5` gives `runs/w1.5.md`, not `runs/w1.md`).
pub fn prefixed(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_keeps_dots_of_the_prefix() {
        assert_eq!(
            prefixed(Path::new("a/w1.5-l6"), "md"),
            PathBuf::from("a/w1.5-l6.md")
        );
        assert_eq!(
            prefixed(Path::new("out"), "log.csv"),
            PathBuf::from("out.log.csv")
        );
    }
}
