//! A minimal `.npz` writer (an uncompressed zip of `.npy` arrays, what `numpy.savez` writes)
//! and the PNG reader that feeds it, for gathering a merged run's images.

use std::io::{BufReader, Write};
use std::path::Path;

/// Problems reading images or writing the archive.
#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A PNG that cannot be decoded or is not 8-bit.
    #[error("{path}: {reason}")]
    Image {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Images of one group differ in size.
    #[error(
        "{path} is {got:?} (height, width, channels); earlier images of the group are {want:?}"
    )]
    Shape {
        /// The file.
        path: String,
        /// Its shape.
        got: [usize; 3],
        /// The group's.
        want: [usize; 3],
    },
    /// The archive would need zip64.
    #[error("an array or the archive would exceed 4 GiB; gather fewer images per file (--npz-by)")]
    TooLarge,
}

/// An 8-bit PNG as (height, width, channels) and its bytes (palette images expanded).
pub fn read_png(path: &Path) -> Result<([usize; 3], Vec<u8>), NpzError> {
    let bad = |reason: String| NpzError::Image {
        path: path.display().to_string(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|source| NpzError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut dec = png::Decoder::new(BufReader::new(f));
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| bad(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    if info.bit_depth != png::BitDepth::Eight {
        return Err(bad(format!(
            "{:?}-bit images are not gathered (8-bit only)",
            info.bit_depth
        )));
    }
    let c = info.color_type.samples();
    let (h, w) = (info.height as usize, info.width as usize);
    buf.truncate(info.buffer_size());
    if buf.len() != h * w * c {
        return Err(bad("unexpected row layout".into()));
    }
    Ok(([h, w, c], buf))
}

/// One array: numpy dtype (`|u1`, `<i8`), shape, little-endian data.
pub struct Array {
    /// Entry name without `.npy`.
    pub name: String,
    /// numpy `descr`.
    pub descr: &'static str,
    /// Shape.
    pub shape: Vec<usize>,
    /// Raw data.
    pub data: Vec<u8>,
}

impl Array {
    /// An `int64` vector.
    pub fn i64s(name: &str, v: &[i64]) -> Array {
        Array {
            name: name.to_string(),
            descr: "<i8",
            shape: vec![v.len()],
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn npy(&self) -> Vec<u8> {
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => format!(
                "({})",
                self.shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
            self.descr
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = Vec::with_capacity(10 + header.len() + self.data.len());
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.data);
        out
    }
}

fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for b in data {
        c = t[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The bytes of an `.npz` holding `arrays` (stored, no compression).
pub fn npz_bytes(arrays: &[Array]) -> Result<Vec<u8>, NpzError> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let u32_of = |n: usize| u32::try_from(n).map_err(|_| NpzError::TooLarge);
    for a in arrays {
        let name = format!("{}.npy", a.name);
        let data = a.npy();
        let crc = crc32(&data);
        let size = u32_of(data.len())?;
        let offset = u32_of(out.len())?;
        let mut local = Vec::new();
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&20u16.to_le_bytes()); // version needed
        local.extend_from_slice(&0u16.to_le_bytes()); // flags
        local.extend_from_slice(&0u16.to_le_bytes()); // stored
        local.extend_from_slice(&0u16.to_le_bytes()); // time
        local.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(&data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // made by
        central.extend_from_slice(&local[4..30]);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
        central.extend_from_slice(&0u32.to_le_bytes()); // external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = u32_of(out.len())?;
    let cd_size = u32_of(central.len())?;
    out.extend_from_slice(&central);
    let n = u16::try_from(arrays.len()).map_err(|_| NpzError::TooLarge)?;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // disk numbers
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    u32_of(out.len())?;
    Ok(out)
}

/// Writes an `.npz` (through a temporary name).
pub fn write_npz(path: &Path, arrays: &[Array]) -> Result<(), NpzError> {
    let bytes = npz_bytes(arrays)?;
    let tmp = path.with_extension(format!("npz.tmp-{}", std::process::id()));
    let io = |source| NpzError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_npy_headers_are_standard() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let a = Array::i64s("x", &[1, 2]);
        let npy = a.npy();
        assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let h = std::str::from_utf8(&npy[10..10 + hl]).unwrap();
        assert!(h.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }"));
        assert_eq!(npy.len(), 10 + hl + 16);
        let z = npz_bytes(&[a]).unwrap();
        assert_eq!(&z[..4], b"PK\x03\x04");
        assert_eq!(&z[z.len() - 22..z.len() - 18], b"PK\x05\x06");
    }
}
