//! `/view` and `/upload/image` stay inside their folders; oversized and malformed uploads
//! are refused with JSON errors and the server keeps serving.

mod serve_util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use serve_util::*;

fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----odeltTestBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (name, filename, data) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(srv: &TestServer, fields: &[(&str, Option<&str>, &[u8])]) -> Resp {
    let (ct, body) = multipart(fields);
    request(
        srv.addr,
        "POST",
        "/upload/image",
        &[("Content-Type", &ct)],
        &body,
    )
}

#[test]
fn view_refuses_traversal_absolute_paths_and_links() {
    let srv = server("view");
    let out = srv.output_dir();
    std::fs::create_dir_all(out.join("sub")).unwrap();
    std::fs::write(out.join("sub/ok.png"), b"\x89PNG\r\n\x1a\nfake").unwrap();
    std::fs::write(srv.dir.join("secret.txt"), b"secret").unwrap();

    let ok = get(srv.addr, "/view?filename=ok.png&subfolder=sub&type=output");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type"), Some("image/png"));
    // preview= is accepted (the stored file is served).
    assert_eq!(
        get(
            srv.addr,
            "/api/view?filename=ok.png&subfolder=sub&preview=webp;90"
        )
        .status,
        200
    );

    let bad_requests = [
        "/view?filename=../secret.txt",
        "/view?filename=..%2Fsecret.txt",
        "/view?filename=%2Fetc%2Fpasswd",
        "/view?filename=secret.txt&subfolder=..",
        "/view?filename=secret.txt&subfolder=sub%2F..%2F..",
        "/view?filename=passwd&subfolder=%2Fetc",
        "/view?filename=ok.png&type=secret",
        "/view?subfolder=sub",
    ];
    for path in bad_requests {
        let r = get(srv.addr, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.json()["error"]["message"].is_string(), "{path}");
    }
    assert_eq!(get(srv.addr, "/view?filename=missing.png").status, 404);

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(srv.dir.join("secret.txt"), out.join("link.png")).unwrap();
        std::os::unix::fs::symlink(&srv.dir, out.join("up")).unwrap();
        for path in [
            "/view?filename=link.png",
            "/view?filename=secret.txt&subfolder=up",
        ] {
            let r = get(srv.addr, path);
            assert_eq!(r.status, 403, "{path}: {}", r.text());
            assert!(!r.text().contains("secret\""), "{path} leaked the file");
        }
    }
    assert_eq!(
        get(srv.addr, "/view?filename=ok.png&subfolder=sub").status,
        200
    );
}

#[test]
fn uploads_land_in_their_folder_are_renamed_and_refuse_escapes() {
    let srv = server("upload");
    let png = b"\x89PNG\r\n\x1a\nimagebytes";
    let r = upload(&srv, &[("image", Some("pic.png"), png)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"name": "pic.png", "subfolder": "", "type": "input"})
    );
    assert_eq!(std::fs::read(srv.input_dir().join("pic.png")).unwrap(), png);
    // Same name again: renamed, unless overwrite is asked for.
    let r = upload(&srv, &[("image", Some("pic.png"), b"second")]);
    assert_eq!(r.json()["name"], "pic (1).png");
    let r = upload(
        &srv,
        &[
            ("image", Some("pic.png"), b"third"),
            ("overwrite", None, b"true"),
        ],
    );
    assert_eq!(r.json()["name"], "pic.png");
    assert_eq!(
        std::fs::read(srv.input_dir().join("pic.png")).unwrap(),
        b"third"
    );
    // Subfolder and type.
    let r = upload(
        &srv,
        &[
            ("image", Some("t.png"), png),
            ("subfolder", None, b"a/b"),
            ("type", None, b"temp"),
        ],
    );
    assert_eq!(
        r.json(),
        json!({"name": "t.png", "subfolder": "a/b", "type": "temp"})
    );
    let v = get(srv.addr, "/view?filename=t.png&subfolder=a/b&type=temp");
    assert_eq!(v.body, png);
    assert_eq!(
        get(srv.addr, "/view?filename=pic%20(1).png&type=input").body,
        b"second"
    );

    type Fields<'a> = &'a [(&'a str, Option<&'a str>, &'a [u8])];
    let escapes: [Fields; 5] = [
        &[("image", Some("../evil.png"), png)],
        &[("image", Some("/tmp/evil.png"), png)],
        &[
            ("image", Some("ok.png"), png),
            ("subfolder", None, b"../../x"),
        ],
        &[("image", Some("ok.png"), png), ("subfolder", None, b"/tmp")],
        &[("image", Some("ok.png"), png), ("type", None, b"models")],
    ];
    for fields in escapes {
        let r = upload(&srv, fields);
        assert_eq!(r.status, 400, "{fields:?}: {}", r.text());
        assert!(r.json()["error"]["message"].is_string());
    }
    assert!(!srv.dir.join("evil.png").exists());
    #[cfg(unix)]
    {
        let outside = temp_dir("upload-outside");
        std::os::unix::fs::symlink(&outside, srv.input_dir().join("linked")).unwrap();
        let r = upload(
            &srv,
            &[
                ("image", Some("x.png"), png),
                ("subfolder", None, b"linked"),
            ],
        );
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(!outside.join("x.png").exists());
    }
    // Malformed forms.
    let r = request(
        srv.addr,
        "POST",
        "/upload/image",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 400);
    let r = upload(&srv, &[("notimage", Some("a.png"), png)]);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("image"));
    let r = request(
        srv.addr,
        "POST",
        "/upload/image",
        &[("Content-Type", "multipart/form-data; boundary=zz")],
        b"--zz\r\ngarbage",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn oversized_bodies_get_413_and_the_server_keeps_serving() {
    let srv = server_with("oversize", |c| {
        c.max_upload_bytes = 64 * 1024;
        c.max_json_bytes = 32 * 1024;
    });
    // Declared too large: refused from the headers alone.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /upload/image HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n",
        srv.addr
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = parse_response(&raw);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "payload_too_large");

    // Actually sent: read, refused, answered.
    let big = vec![b'x'; 100 * 1024];
    let r = upload(&srv, &[("image", Some("big.png"), &big)]);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("65536"));
    assert!(!srv.input_dir().join("big.png").exists());

    // Sent chunked without a length.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /prompt HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.addr
    )
    .unwrap();
    for _ in 0..8 {
        write!(s, "2000\r\n").unwrap();
        s.write_all(&[b' '; 0x2000]).unwrap();
        write!(s, "\r\n").unwrap();
    }
    write!(s, "0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).status, 413);

    // A big prompt JSON.
    let mut p = serde_json::Map::new();
    for k in 0..2000 {
        p.insert(
            k.to_string(),
            json!({"class_type": "IntConstant", "inputs": {"value": k}}),
        );
    }
    let r = post_json(srv.addr, "/prompt", &json!({"prompt": p}));
    assert_eq!(r.status, 413);

    let small = upload(&srv, &[("image", Some("small.png"), b"ok")]);
    assert_eq!(small.status, 200);
    assert_eq!(get(srv.addr, "/queue").status, 200);
}

#[test]
fn garbage_on_the_wire_does_not_hurt_the_server() {
    let srv = server("garbage");
    let raw = |bytes: &[u8]| -> Vec<u8> {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    // Not HTTP at all, a bad request line, a huge header: answered 4xx or closed.
    for junk in [
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        format!(
            "GET /queue HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1_000_000)
        )
        .into_bytes(),
    ] {
        let t = std::time::Instant::now();
        let out = raw(&junk);
        eprintln!(
            "junk of {} bytes: {} bytes back in {:?}",
            junk.len(),
            out.len(),
            t.elapsed()
        );
        if !out.is_empty() {
            let status = parse_response(&out).status;
            assert!((400..500).contains(&status), "status {status}");
        }
    }
    // A WebSocket that sends junk, then an oversized message, is dropped; others carry on.
    let mut ws = WsClient::connect(srv.addr, "junk");
    assert_eq!(ws.next(Duration::from_secs(10)).unwrap().ty(), "status");
    ws.send_text("not json");
    ws.send_text("{\"type\": \"feature_flags\", \"data\": 5}");
    let _ = ws
        .ws
        .send(tungstenite::Message::Binary(vec![1u8, 2, 3].into()));
    let _ = ws
        .ws
        .send(tungstenite::Message::Text("x".repeat(200_000).into()));
    let mut good = WsClient::connect(srv.addr, "good");
    assert_eq!(good.next(Duration::from_secs(10)).unwrap().ty(), "status");
    let id = uuid();
    queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("g", 4, 1, 0), "prompt_id": id, "client_id": "good"}),
    );
    good.until_done(&id, Duration::from_secs(30));
    // A bad clientId is refused before the upgrade.
    let r = get(srv.addr, "/ws?clientId=a%20b");
    assert_eq!(r.status, 400);
    assert_eq!(get(srv.addr, "/queue").status, 200);
}
