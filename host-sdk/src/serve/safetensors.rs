//! The header of a safetensors file: an 8-byte little-endian length, then that many bytes
//! of JSON whose optional `__metadata__` object holds the file's string metadata.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value as Json};

/// Largest header read (bigger ones are refused rather than allocated).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The `__metadata__` of the safetensors file at `path` (`{}` when it has none).
pub(crate) fn metadata(path: &Path) -> Result<Json, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    read_metadata(&mut f)
}

/// The `__metadata__` of the safetensors header at the start of `r`.
fn read_metadata(r: &mut impl Read) -> Result<Json, String> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)
        .map_err(|_| "too short for a safetensors header".to_string())?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(format!("header of {len} bytes is too large"));
    }
    let mut head = vec![0u8; len as usize];
    r.read_exact(&mut head)
        .map_err(|_| "truncated safetensors header".to_string())?;
    let v: Json = serde_json::from_slice(&head).map_err(|e| format!("header is not JSON: {e}"))?;
    Ok(v.get("__metadata__").cloned().unwrap_or_else(|| json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, rest: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(rest);
        b
    }

    fn read(bytes: &[u8]) -> Result<Json, String> {
        read_metadata(&mut &bytes[..])
    }

    #[test]
    fn returns_the_metadata_object() {
        let h = r#"{"__metadata__":{"format":"pt","ss_name":"x"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        assert_eq!(
            read(&file(h, &[0; 4])).unwrap(),
            json!({"format": "pt", "ss_name": "x"})
        );
    }

    #[test]
    fn no_metadata_is_an_empty_object() {
        assert_eq!(read(&file("{}", &[])).unwrap(), json!({}));
    }

    #[test]
    fn refuses_short_truncated_oversized_and_non_json_headers() {
        assert_eq!(
            read(&[1, 2, 3]).unwrap_err(),
            "too short for a safetensors header"
        );
        let mut truncated = file(r#"{"a":1}"#, &[]);
        truncated.truncate(10);
        assert_eq!(
            read(&truncated).unwrap_err(),
            "truncated safetensors header"
        );
        let huge = (MAX_HEADER_BYTES + 1).to_le_bytes();
        assert!(read(&huge).unwrap_err().contains("too large"));
        assert!(read(&file("not json", &[]))
            .unwrap_err()
            .starts_with("header is not JSON"));
    }

    #[test]
    fn reads_a_file_on_disk() {
        let dir = std::env::temp_dir().join(format!("odelt-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        std::fs::write(&p, file(r#"{"__metadata__":{"k":"v"}}"#, &[])).unwrap();
        assert_eq!(metadata(&p).unwrap(), json!({"k": "v"}));
        assert!(metadata(&dir.join("missing.safetensors")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
