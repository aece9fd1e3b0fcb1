//! The hardened HTTP file routes: upload forms read by the multipart extractor with this server's
//! Content-Disposition parsing (quoted values, `filename*`), per-field limits, and `/view` served
//! by the file service (Range → 206, ETag/Last-Modified → 304, MIME types) after the confinement
//! check.

mod serve_util;

use serde_json::json;
use serve_util::*;

const BOUNDARY: &str = "odeltHardeningBoundary";

/// A form from raw parts: (Content-Disposition value, body).
fn form(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (disposition, data) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post_form(srv: &TestServer, parts: &[(&str, &[u8])]) -> Resp {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    request(
        srv.addr,
        "POST",
        "/upload/image",
        &[("Content-Type", &ct)],
        &form(parts),
    )
}

#[test]
fn quoted_field_values_and_extended_file_names_parse_right() {
    let srv = server("harden-upload");
    // `; name=evil` inside the quoted file name is part of the name, not a parameter.
    let r = post_form(
        &srv,
        &[(
            r#"form-data; filename="x; name=evil.png"; name="image""#,
            b"one",
        )],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "x; name=evil.png");
    assert_eq!(
        std::fs::read(srv.input_dir().join("x; name=evil.png")).unwrap(),
        b"one"
    );

    // RFC 8187 filename* wins over filename and is percent-decoded as UTF-8.
    let r = post_form(
        &srv,
        &[(
            "form-data; name=\"image\"; filename=\"fallback.png\"; filename*=UTF-8''%E2%82%AC%20caf%C3%A9.png",
            b"two",
        )],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "€ café.png");
    assert!(srv.input_dir().join("€ café.png").is_file());
    assert!(!srv.input_dir().join("fallback.png").exists());

    // Escaped quotes in a quoted field name; the text fields are found by their real names.
    let r = post_form(
        &srv,
        &[
            (r#"form-data; name="image"; filename="q.png""#, b"three"),
            (r#"form-data; name="sub\"folder""#, b"ignored"),
            (r#"form-data; name="subfolder""#, b"quoted"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"name": "q.png", "subfolder": "quoted", "type": "input"})
    );

    // A file name that decodes to a path is still refused.
    for disposition in [
        "form-data; name=\"image\"; filename*=UTF-8''..%2F..%2Fevil.png",
        "form-data; name=\"image\"; filename*=UTF-8''%2Ftmp%2Fevil.png",
        r#"form-data; name="image"; filename="a/../../evil.png""#,
    ] {
        let r = post_form(&srv, &[(disposition, b"x")]);
        assert_eq!(r.status, 400, "{disposition}: {}", r.text());
    }
    assert!(!srv.dir.join("evil.png").exists());

    // Malformed dispositions and unknown charsets are 400 with a message naming the header.
    for disposition in [
        r#"form-data; name="image"; filename="open.png"#,
        "form-data; name=\"image\"; filename*=koi8-r''x.png",
    ] {
        let r = post_form(&srv, &[(disposition, b"x")]);
        assert_eq!(r.status, 400, "{disposition}: {}", r.text());
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains("Content-Disposition"), "{msg}");
    }
}

#[test]
fn text_fields_have_their_own_limit() {
    let srv = server("harden-fields");
    let long = vec![b'a'; 10_000];
    let r = post_form(
        &srv,
        &[
            (r#"form-data; name="image"; filename="ok.png""#, b"x"),
            (r#"form-data; name="subfolder""#, &long),
        ],
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "payload_too_large");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"subfolder\""));
    assert!(!srv.input_dir().join("ok.png").exists());
    // Too many parts.
    let many: Vec<(&str, &[u8])> = (0..40)
        .map(|_| (r#"form-data; name="x""#, &b"1"[..]))
        .collect();
    let r = post_form(&srv, &many);
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn view_streams_ranges_and_revalidates() {
    let srv = server("harden-view");
    let out = srv.output_dir();
    std::fs::create_dir_all(out.join("sub")).unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    std::fs::write(out.join("sub/clip.png"), &data).unwrap();
    let path = "/view?filename=clip.png&subfolder=sub&type=output";

    let full = get(srv.addr, path);
    assert_eq!(full.status, 200);
    assert_eq!(full.body, data);
    assert_eq!(full.header("content-type"), Some("image/png"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert!(full
        .header("content-disposition")
        .unwrap()
        .contains("clip.png"));
    let etag = full.header("etag").expect("ETag").to_string();
    let modified = full
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();

    // Range → 206 with exactly those bytes.
    let r = request(srv.addr, "GET", path, &[("Range", "bytes=1000-1999")], b"");
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body, &data[1000..2000]);
    assert_eq!(r.header("content-range"), Some("bytes 1000-1999/100000"));
    let r = request(srv.addr, "GET", path, &[("Range", "bytes=-10")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[data.len() - 10..]);
    let r = request(srv.addr, "GET", path, &[("Range", "bytes=99990-")], b"");
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = request(srv.addr, "GET", path, &[("Range", "bytes=200000-")], b"");
    assert_eq!(r.status, 416);

    // Revalidation: unchanged → 304 without a body.
    let r = request(srv.addr, "GET", path, &[("If-None-Match", &etag)], b"");
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = request(
        srv.addr,
        "GET",
        path,
        &[("If-Modified-Since", &modified)],
        b"",
    );
    assert_eq!(r.status, 304);
    let r = request(
        srv.addr,
        "GET",
        path,
        &[("If-None-Match", "\"other\"")],
        b"",
    );
    assert_eq!(r.status, 200);

    // MIME types from the extension.
    for (name, mime) in [("a.webp", "image/webp"), ("a.json", "application/json")] {
        std::fs::write(out.join(name), b"{}").unwrap();
        let r = get(srv.addr, &format!("/view?filename={name}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(mime), "{name}");
    }

    // The confinement check comes first, also for ranges and encoded names.
    std::fs::write(srv.dir.join("secret.txt"), b"secret").unwrap();
    for bad in [
        "/view?filename=..%2Fsecret.txt",
        "/view?filename=%2E%2E%2Fsecret.txt",
        "/view?filename=secret.txt&subfolder=%2e%2e",
        "/view?filename=%2Fetc%2Fpasswd",
    ] {
        let r = request(srv.addr, "GET", bad, &[("Range", "bytes=0-3")], b"");
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(!r.body.starts_with(b"secr"), "{bad} leaked bytes");
        assert!(r.json()["error"]["message"].is_string(), "{bad}");
    }
}
