//! A small `multipart/form-data` parser for uploads (the whole body is in memory, already
//! bounded by the upload limit).

/// One form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The field name.
    pub name: String,
    /// The file name, for file fields.
    pub filename: Option<String>,
    /// The part's Content-Type, if given.
    pub content_type: Option<String>,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Why a body could not be read as multipart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The Content-Type is not multipart/form-data with a boundary.
    #[error("expected Content-Type multipart/form-data with a boundary, got '{0}'")]
    ContentType(String),
    /// The body does not follow the format.
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
}

/// The boundary of a `multipart/form-data; boundary=...` Content-Type.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut parts = content_type.split(';');
    let ty = parts.next().unwrap_or("").trim();
    if !ty.eq_ignore_ascii_case("multipart/form-data") {
        return Err(MultipartError::ContentType(content_type.to_string()));
    }
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("boundary") {
                let b = v.trim().trim_matches('"');
                if !b.is_empty() && b.len() <= 200 {
                    return Ok(b.to_string());
                }
            }
        }
    }
    Err(MultipartError::ContentType(content_type.to_string()))
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// A `name="value"` parameter of a Content-Disposition header.
fn param(header: &str, key: &str) -> Option<String> {
    let mut rest = header;
    while let Some(pos) = rest.find(';') {
        rest = &rest[pos + 1..];
        let item = rest.trim_start();
        if let Some((k, v)) = item.split_once('=') {
            if k.trim().eq_ignore_ascii_case(key) {
                let v = v.trim_start();
                if let Some(stripped) = v.strip_prefix('"') {
                    let end = stripped.find('"')?;
                    return Some(stripped[..end].to_string());
                }
                let end = v.find(';').unwrap_or(v.len());
                return Some(v[..end].trim().to_string());
            }
        }
    }
    None
}

/// Parses a multipart body with the Content-Type's boundary.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Part>, MultipartError> {
    let b = boundary(content_type)?;
    let delim = format!("--{b}").into_bytes();
    let mut pos = find(body, &delim, 0).ok_or(MultipartError::Malformed("no boundary found"))?;
    let mut parts = Vec::new();
    loop {
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(MultipartError::Malformed("boundary not followed by CRLF"));
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos)
            .ok_or(MultipartError::Malformed("part headers not terminated"))?;
        let head = std::str::from_utf8(&body[pos..head_end])
            .map_err(|_| MultipartError::Malformed("part headers are not UTF-8"))?;
        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                name = param(v, "name");
                filename = param(v, "filename");
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_string());
            }
        }
        let data_start = head_end + 4;
        let mut next_delim = b"\r\n".to_vec();
        next_delim.extend_from_slice(&delim);
        let end = find(body, &next_delim, data_start).ok_or(MultipartError::Malformed(
            "part not terminated by the boundary",
        ))?;
        parts.push(Part {
            name: name.ok_or(MultipartError::Malformed("part without a name"))?,
            filename,
            content_type,
            data: body[data_start..end].to_vec(),
        });
        if parts.len() > 64 {
            return Err(MultipartError::Malformed("too many parts"));
        }
        pos = end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_files() {
        let body = b"--XYZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a b.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--x\r\n--XYZ\r\nContent-Disposition: form-data; name=\"subfolder\"\r\n\r\nsub\r\n--XYZ--\r\n";
        let parts = parse_multipart("multipart/form-data; boundary=XYZ", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "image");
        assert_eq!(parts[0].filename.as_deref(), Some("a b.png"));
        assert_eq!(parts[0].content_type.as_deref(), Some("image/png"));
        assert_eq!(parts[0].data, b"\x89PNG\r\n--x");
        assert_eq!(parts[1].name, "subfolder");
        assert_eq!(parts[1].data, b"sub");
    }

    #[test]
    fn refuses_malformed_bodies() {
        assert!(matches!(
            parse_multipart("application/json", b""),
            Err(MultipartError::ContentType(_))
        ));
        let ct = "multipart/form-data; boundary=\"B\"";
        assert!(parse_multipart(ct, b"nothing").is_err());
        assert!(parse_multipart(
            ct,
            b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated"
        )
        .is_err());
        assert!(parse_multipart(ct, b"--B\r\nno headers end").is_err());
        assert!(parse_multipart(ct, b"--B\r\n\r\n\r\nx\r\n--B--").is_err());
    }
}
