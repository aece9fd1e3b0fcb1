//! `multipart/form-data` uploads: the body is framed and streamed by axum's multipart extractor
//! (multer), each part bounded as it arrives ([`Limits`]); the `Content-Disposition` of each part is
//! read here ([`parse_disposition`]: RFC 6266/7578 parameters with quoted strings, and RFC 8187
//! `filename*`), because multer's own scan takes a `name=` inside a quoted file name
//! (`filename="x; name=evil"`) for the field name and does not read `filename*`.

use axum::extract::multipart::{Field, Multipart, MultipartError as AxumMultipartError};
use axum::http::{header, StatusCode};

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

/// How much of a form is read before it is refused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of one file field (a part with a file name).
    pub file_bytes: usize,
    /// Most bytes of one other field (`type`, `subfolder`, `overwrite`, ...).
    pub text_bytes: usize,
    /// Most parts in one form.
    pub fields: usize,
}

/// Why a form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The request is not `multipart/form-data` with a boundary.
    #[error("expected Content-Type multipart/form-data with a boundary: {0}")]
    ContentType(String),
    /// A part's `Content-Disposition` cannot be read.
    #[error("malformed Content-Disposition {header:?}: {reason}")]
    Disposition {
        /// The header as sent.
        header: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The body does not follow the format.
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    /// One field is larger than its limit.
    #[error("form field {field:?} exceeds the limit of {limit} bytes")]
    FieldTooLarge {
        /// The field's name.
        field: String,
        /// Its limit.
        limit: usize,
    },
    /// The whole body is larger than the server's limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More parts than [`Limits::fields`].
    #[error("the form has more than {0} fields")]
    TooManyFields(usize),
}

impl MultipartError {
    /// The HTTP status this error answers with: 413 for sizes, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            MultipartError::FieldTooLarge { .. } | MultipartError::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The `name` and file name of a part's `Content-Disposition`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disposition {
    /// The disposition type (`form-data`), lowercased.
    pub kind: String,
    /// The `name` parameter.
    pub name: Option<String>,
    /// The file name: `filename*` (RFC 8187, decoded) when given, else `filename`.
    pub filename: Option<String>,
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c)
}

/// Parses a `Content-Disposition` value: `type *( ";" name "=" ( token / quoted-string ) )`.
/// Quoted strings keep `;` and `=` as text and unescape `\"` and `\\` (a backslash before any
/// other character stays, as browsers send Windows paths unescaped); parameter names are
/// case-insensitive and the first of a repeated one counts; `filename*` is RFC 8187's
/// `charset'language'percent-encoded` (UTF-8 or ISO-8859-1) and wins over `filename`.
pub fn parse_disposition(value: &str) -> Result<Disposition, MultipartError> {
    let bad = |reason| MultipartError::Disposition {
        header: value.to_string(),
        reason,
    };
    let mut chars = value.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| *c == ' ' || *c == '\t').is_some() {}
    };
    let token = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        let mut t = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| is_token_char(*c)) {
            t.push(c);
        }
        t
    };
    skip_ws(&mut chars);
    let kind = token(&mut chars).to_ascii_lowercase();
    if kind.is_empty() {
        return Err(bad("no disposition type"));
    }
    let mut out = Disposition {
        kind,
        ..Disposition::default()
    };
    let mut ext_filename: Option<String> = None;
    loop {
        skip_ws(&mut chars);
        match chars.next() {
            None => break,
            Some((_, ';')) => {}
            Some(_) => return Err(bad("expected `;` between parameters")),
        }
        skip_ws(&mut chars);
        if chars.peek().is_none() {
            break; // a trailing `;`
        }
        let key = token(&mut chars).to_ascii_lowercase();
        if key.is_empty() {
            return Err(bad("a parameter has no name"));
        }
        skip_ws(&mut chars);
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(bad("a parameter has no `=`"));
        }
        skip_ws(&mut chars);
        let val = if chars.next_if(|(_, c)| *c == '"').is_some() {
            let mut v = String::new();
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated quoted string")),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next_if(|(_, c)| *c == '"' || *c == '\\') {
                        Some((_, c)) => v.push(c),
                        None => v.push('\\'),
                    },
                    Some((_, c)) => v.push(c),
                }
            }
            v
        } else {
            let v = token(&mut chars);
            // RFC 8187 values also hold `'` and `%`, which are token characters; nothing else may follow.
            if v.is_empty() {
                return Err(bad("a parameter has an empty value"));
            }
            v
        };
        match key.as_str() {
            "name" if out.name.is_none() => out.name = Some(val),
            "filename" if out.filename.is_none() => out.filename = Some(val),
            "filename*" if ext_filename.is_none() => {
                ext_filename = Some(decode_ext_value(&val).ok_or_else(|| {
                    bad("filename* is not charset'language'percent-encoded UTF-8 or ISO-8859-1")
                })?)
            }
            _ => {}
        }
    }
    if ext_filename.is_some() {
        out.filename = ext_filename;
    }
    Ok(out)
}

/// RFC 8187 `ext-value`: `charset "'" [ language ] "'" value-chars`, percent-decoded.
fn decode_ext_value(v: &str) -> Option<String> {
    let (charset, rest) = v.split_once('\'')?;
    let (_language, encoded) = rest.split_once('\'')?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut it = encoded.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = (it.next()? as char).to_digit(16)?;
            let lo = (it.next()? as char).to_digit(16)?;
            bytes.push((hi * 16 + lo) as u8);
        } else {
            bytes.push(b);
        }
    }
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok()
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Some(bytes.into_iter().map(char::from).collect())
    } else {
        None
    }
}

fn stream_error(e: AxumMultipartError, body_limit: usize) -> MultipartError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        MultipartError::BodyTooLarge { limit: body_limit }
    } else {
        MultipartError::Malformed(e.body_text())
    }
}

async fn read_part(
    field: &mut Field<'_>,
    name: &str,
    limit: usize,
    body_limit: usize,
) -> Result<Vec<u8>, MultipartError> {
    let mut data = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| stream_error(e, body_limit))?
    {
        if data.len() + chunk.len() > limit {
            return Err(MultipartError::FieldTooLarge {
                field: name.to_string(),
                limit,
            });
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// Reads every part of a form, each within its limit (`body_limit` is the route's whole-body
/// limit, for the message). A part without a `name` is skipped.
pub async fn read_form(
    mut form: Multipart,
    limits: Limits,
    body_limit: usize,
) -> Result<Vec<Part>, MultipartError> {
    let mut parts = Vec::new();
    let mut seen = 0usize;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| stream_error(e, body_limit))?
    {
        seen += 1;
        if seen > limits.fields {
            return Err(MultipartError::TooManyFields(limits.fields));
        }
        let header = field
            .headers()
            .get(header::CONTENT_DISPOSITION)
            .ok_or_else(|| MultipartError::Malformed("a part has no Content-Disposition".into()))?;
        let header = header.to_str().map_err(|_| MultipartError::Disposition {
            header: String::from_utf8_lossy(header.as_bytes()).into_owned(),
            reason: "not ASCII: send non-ASCII file names as filename*=UTF-8''...",
        })?;
        let d = parse_disposition(header)?;
        let content_type = field
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(name) = d.name else {
            read_part(&mut field, "", limits.text_bytes, body_limit).await?;
            continue;
        };
        let limit = if d.filename.is_some() {
            limits.file_bytes
        } else {
            limits.text_bytes
        };
        let data = read_part(&mut field, &name, limit, body_limit).await?;
        parts.push(Part {
            name,
            filename: d.filename,
            content_type,
            data,
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: &str) -> Disposition {
        parse_disposition(v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    #[test]
    fn quoted_values_keep_separators() {
        let x = d(r#"form-data; filename="x; name=evil"; name="image""#);
        assert_eq!(x.name.as_deref(), Some("image"));
        assert_eq!(x.filename.as_deref(), Some("x; name=evil"));
        let x = d(r#"form-data; name="a\"b\\c"; filename="C:\Users\p.png""#);
        assert_eq!(x.name.as_deref(), Some("a\"b\\c"));
        assert_eq!(x.filename.as_deref(), Some("C:\\Users\\p.png"));
        let x = d("Form-Data ;NAME = subfolder ;");
        assert_eq!(
            (x.kind.as_str(), x.name.as_deref()),
            ("form-data", Some("subfolder"))
        );
        assert_eq!(x.filename, None);
        // The first of a repeated parameter counts.
        assert_eq!(
            d(r#"form-data; name="a"; name="b""#).name.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn extended_file_names_are_decoded_and_win() {
        let x = d(
            r#"form-data; name="image"; filename="fallback.png"; filename*=UTF-8''%E2%82%AC%20rates.png"#,
        );
        assert_eq!(x.filename.as_deref(), Some("€ rates.png"));
        let x = d("form-data; filename*=iso-8859-1'en'%A3.png; name=image");
        assert_eq!(x.filename.as_deref(), Some("£.png"));
        assert_eq!(x.name.as_deref(), Some("image"));
        for bad in [
            "form-data; filename*=UTF-8''%E2%82",
            "form-data; filename*=koi8-r''x",
            "form-data; filename*=nocharset",
            "form-data; filename*=UTF-8''%zz",
        ] {
            assert!(parse_disposition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "; name=a",
            "form-data; name",
            "form-data; name=",
            r#"form-data; name="open"#,
            "form-data name=a",
            r#"form-data; name="a" junk"#,
        ] {
            let e = parse_disposition(bad).unwrap_err();
            assert!(e.to_string().contains("Content-Disposition"), "{bad}: {e}");
        }
    }
}
