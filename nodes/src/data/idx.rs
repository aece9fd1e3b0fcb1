//! The IDX format of MNIST-style datasets: a big-endian header (magic `0x0000_08_NN`: unsigned byte data with `NN`
//! dimensions, then one u32 per dimension) followed by the raw bytes. Files may be gzip-compressed.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses IDX bytes (already decompressed). `what` names the source in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(Error::invalid(format!(
            "{what}: too short for an IDX header"
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::invalid(format!(
            "{what}: bad IDX magic {:02x}{:02x}{:02x}{:02x}",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(Error::invalid(format!(
            "{what}: IDX element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        )));
    }
    let nd = bytes[3] as usize;
    let header = 4 + 4 * nd;
    if nd == 0 || bytes.len() < header {
        return Err(Error::invalid(format!(
            "{what}: truncated IDX header ({nd} dimensions)"
        )));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::invalid(format!("{what}: IDX dimensions {dims:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() != count {
        return Err(Error::invalid(format!(
            "{what}: IDX dimensions {dims:?} need {count} bytes but the file holds {}",
            body.len()
        )));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

/// Reads an IDX file, gunzipping it when it starts with the gzip magic.
pub fn read(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        out
    } else {
        raw
    };
    parse(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn parses_hand_built_images_and_labels() {
        let data: Vec<u8> = (0..2 * 3 * 2).map(|i| i as u8 * 10).collect();
        let a = parse(&idx_bytes(&[2, 3, 2], &data), "t").unwrap();
        assert_eq!(a.dims, vec![2, 3, 2]);
        assert_eq!(a.data, data);
        let l = parse(&idx_bytes(&[4], &[3, 1, 4, 1]), "l").unwrap();
        assert_eq!(l.dims, vec![4]);
        assert_eq!(l.data, vec![3, 1, 4, 1]);
    }

    #[test]
    fn rejects_bad_headers_and_sizes() {
        assert!(parse(&[0, 0, 8], "x").is_err());
        assert!(parse(&[1, 0, 8, 1, 0, 0, 0, 1, 0], "x").is_err());
        assert!(parse(&idx_bytes(&[3], &[1, 2]), "x").is_err());
        let mut wrong_type = idx_bytes(&[1], &[1]);
        wrong_type[2] = 0x0d;
        assert!(parse(&wrong_type, "x").is_err());
    }

    #[test]
    fn reads_gzipped_file() {
        let dir = std::env::temp_dir().join(format!("odelt-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&idx_bytes(&[2, 2], &[9, 8, 7, 6])).unwrap();
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.dims, vec![2, 2]);
        assert_eq!(a.data, vec![9, 8, 7, 6]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
