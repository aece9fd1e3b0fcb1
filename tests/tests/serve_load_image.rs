//! Upload → LoadImage through `odelt serve` with the built plugin: an image posted to `/upload/image` is in
//! LoadImage's combo on the next `/object_info` and runs; a text file uploaded as `.png` is refused by validation
//! and the server keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use odelt_host::serve::{start, ServeConfig};
use odelt_host::ExecutorConfig;
use odelt_tests::fixture;
use serde_json::{json, Value as Json};

/// One HTTP/1.1 request with `Connection: close`: (status, body).
fn request(addr: SocketAddr, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

fn get_json(addr: SocketAddr, path: &str) -> Json {
    let (st, body) = request(addr, "GET", path, "text/plain", b"");
    assert_eq!(st, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

fn upload(addr: SocketAddr, name: &str, data: &[u8]) -> Json {
    let boundary = "----odeltLoadImageTest";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (st, resp) = request(
        addr,
        "POST",
        "/upload/image",
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    );
    assert_eq!(st, 200, "upload: {}", String::from_utf8_lossy(&resp));
    serde_json::from_slice(&resp).unwrap()
}

fn choices(addr: SocketAddr) -> Vec<String> {
    let info = get_json(addr, "/object_info");
    info["LoadImage"]["input"]["required"]["image"][0]
        .as_array()
        .expect("LoadImage's combo")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn prompt(image: &str) -> Json {
    json!({"prompt": {
        "1": {"class_type": "ODEtODElCheckpointLoader", "inputs": {
            "ckpt_name": "fashion-dit.safetensors", "weights": "params", "preset": "auto", "num_heads": 0,
            "depth_group": 0, "depth_min": 0, "input_size": 0, "latent_scale": 0.0, "precision": "fp32"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": image}},
        "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "area", "width": 0,
              "height": 0, "crop": "center", "color": "keep", "model": ["1", 0]}},
        "4": {"class_type": "ODEtEncode", "inputs": {"pixels": ["3", 0], "model": ["1", 0], "mode": "mean", "seed": 0}},
        "5": {"class_type": "ODEtDecode", "inputs": {"samples": ["4", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "served/loaded"}}
    }})
}

#[test]
fn an_uploaded_image_is_listed_on_the_next_object_info_and_runs() {
    let f = fixture();
    let dir = f.root.join("serve-load-image");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        executor: ExecutorConfig {
            workers: 2,
            device: "cpu".into(),
            output_dir: dir.join("output"),
            temp_dir: dir.join("temp"),
            models_dir: f.models.clone(),
            input_dir: dir.join("input"),
            cache_runs: 1,
            ..ExecutorConfig::default()
        },
        ..ServeConfig::default()
    };
    let srv = start(f.plugins.clone(), cfg).expect("server starts");
    let addr = srv.addr();

    assert!(!choices(addr).iter().any(|c| c == "fashion_sample.png"));
    let png =
        std::fs::read(odelt_tests::repo_root().join("examples/images/fashion_sample.png")).unwrap();
    let up = upload(addr, "fashion_sample.png", &png);
    assert_eq!(up["name"], "fashion_sample.png", "{up}");
    assert!(
        choices(addr).iter().any(|c| c == "fashion_sample.png"),
        "the upload is listed at once"
    );

    let (st, body) = request(
        addr,
        "POST",
        "/prompt",
        "application/json",
        prompt("fashion_sample.png").to_string().as_bytes(),
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let id = serde_json::from_slice::<Json>(&body).unwrap()["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    let end = Instant::now() + Duration::from_secs(120);
    let entry = loop {
        let h = get_json(addr, &format!("/history/{id}"));
        if let Some(e) = h.get(&id) {
            break e.clone();
        }
        assert!(Instant::now() < end, "the prompt never finished");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    let saved = &entry["outputs"]["6"]["images"][0];
    assert_eq!(saved["subfolder"], "served", "{entry}");
    assert!(dir
        .join("output/served")
        .join(saved["filename"].as_str().unwrap())
        .is_file());

    // A text file uploaded as a PNG: listed, refused by validation with the reason, and the server goes on.
    upload(addr, "notes.png", b"not a picture at all");
    assert!(choices(addr).iter().any(|c| c == "notes.png"));
    let (st, body) = request(
        addr,
        "POST",
        "/prompt",
        "application/json",
        prompt("notes.png").to_string().as_bytes(),
    );
    let text = String::from_utf8_lossy(&body);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("not a PNG, JPEG or WebP"), "{text}");
    assert!(choices(addr).iter().any(|c| c == "fashion_sample.png"));
    drop(srv);
}
