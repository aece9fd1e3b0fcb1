//! Confinement by role through `odelt serve` with the real plugin: LoadLatent reads only from the input
//! directory (absolute names, `..`, links out of it and URL-encoded variants are refused with clear errors;
//! `name [output]` reads what SaveLatent wrote), while the models directory is the user's own: a checkpoint
//! symlinked from elsewhere loads, and so does one in an extra checkpoint folder (extra_model_paths.yaml).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use odelt_host::dirs::ExtraModelDirs;
use odelt_host::serve::{start, ServeConfig, ServerHandle};
use odelt_host::ExecutorConfig;
use odelt_nodes::pipeline::latent_file::write_latent;
use odelt_nodes::pipeline::Array;
use odelt_tests::*;
use serde_json::{json, Value as Json};

struct Srv {
    _handle: ServerHandle,
    addr: SocketAddr,
    dir: PathBuf,
}

fn server(tag: &str, models: &Path, extra: ExtraModelDirs) -> Srv {
    let f = fixture();
    let dir = f.root.join(format!("serve-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        executor: ExecutorConfig {
            workers: 2,
            device: "cpu".into(),
            models_dir: models.to_path_buf(),
            input_dir: dir.join("input"),
            output_dir: dir.join("output"),
            temp_dir: dir.join("temp"),
            extra_model_dirs: extra,
            ..ExecutorConfig::default()
        },
        ..ServeConfig::default()
    };
    let handle = start(Arc::clone(&f.plugins), cfg).expect("server starts");
    let addr = handle.addr();
    Srv {
        _handle: handle,
        addr,
        dir,
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, JSON body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &Json) -> (u16, Json) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let json = serde_json::from_str(rest).unwrap_or(Json::Null);
    (status, json)
}

fn load_and_save(latent: &str) -> Json {
    json!({
        "1": {"class_type": "LoadLatent", "inputs": {"latent": latent}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "latents/copy"}},
    })
}

/// Waits for a prompt's history entry; returns it.
fn wait_done(addr: SocketAddr, id: &str) -> Json {
    let t0 = Instant::now();
    loop {
        let (status, h) = http(addr, "GET", &format!("/history/{id}"), &Json::Null);
        assert_eq!(status, 200);
        if let Some(entry) = h.get(id) {
            if entry["status"]["completed"].as_bool().is_some()
                && entry["status"]["status_str"] != "running"
            {
                return entry.clone();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "prompt {id} did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn accepted(addr: SocketAddr, prompt: Json) -> Json {
    let (status, r) = http(addr, "POST", "/prompt", &json!({ "prompt": prompt }));
    assert_eq!(status, 200, "{r}");
    let id = r["prompt_id"].as_str().expect("prompt_id").to_string();
    let entry = wait_done(addr, &id);
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    entry
}

fn small_latent() -> Array {
    Array::new(vec![1, 1, 2, 2], vec![0.5, -1.0, 2.0, 0.25]).unwrap()
}

#[test]
fn load_latent_reads_only_from_the_input_directory() {
    let f = fixture();
    let srv = server("latent", &f.models, ExtraModelDirs::default());
    let input = srv.dir.join("input");
    let outside = srv.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(input.join("sub")).unwrap();
    // Valid .latent files everywhere, so only the location can be why one is refused.
    let lat = small_latent();
    write_latent(&input.join("sub/ok.latent"), &lat, &[]).unwrap();
    write_latent(&outside.join("secret.latent"), &lat, &[]).unwrap();
    write_latent(&srv.dir.join("secret.latent"), &lat, &[]).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink(outside.join("secret.latent"), input.join("link.latent")).unwrap();
        symlink(&outside, input.join("linkdir")).unwrap();
    }
    let abs = outside.join("secret.latent").display().to_string();
    let mut refused = vec![
        (abs.clone(), "is an absolute path"),
        ("../secret.latent".to_string(), "contains `..`"),
        ("sub/../../secret.latent".to_string(), "contains `..`"),
        ("..\\secret.latent".to_string(), "contains `..`"),
        (
            "%2e%2e%2fsecret.latent".to_string(),
            "not found in the input directory",
        ),
        (
            "..%2Fsecret.latent".to_string(),
            "not found in the input directory",
        ),
        (
            "%2Fetc%2Fpasswd".to_string(),
            "not found in the input directory",
        ),
        (format!("{abs} [output]"), "is an absolute path"),
        ("../secret.latent [output]".to_string(), "contains `..`"),
        // SaveLatent's folder is the output directory: without the annotation nothing is read from it.
        (
            "latents/copy_00001_.latent".to_string(),
            "not found in the input directory",
        ),
    ];
    if cfg!(unix) {
        refused.push((
            "link.latent".to_string(),
            "leads outside the input directory",
        ));
        refused.push((
            "linkdir/secret.latent".to_string(),
            "leads outside the input directory",
        ));
    }
    for (name, why) in &refused {
        let (status, r) = http(
            srv.addr,
            "POST",
            "/prompt",
            &json!({"prompt": load_and_save(name)}),
        );
        assert_eq!(status, 400, "{name:?} was accepted: {r}");
        let errors = &r["node_errors"]["1"]["errors"];
        let text = errors.to_string();
        assert!(text.contains(why), "{name:?}: expected {why:?} in {text}");
        assert!(
            errors[0]["extra_info"]["input_name"] == "latent" || text.contains("latent"),
            "{name:?}: the error names the input: {text}"
        );
        if !name.starts_with('/') {
            assert!(
                !text.contains(&*srv.dir.to_string_lossy()),
                "{name:?}: the error shows where the server's files are: {text}"
            );
        }
    }
    // No copy of the refused files was written.
    assert!(!srv.dir.join("output/latents").exists());

    // Inside the input directory it runs; SaveLatent's output is read back with ComfyUI's annotation.
    let entry = accepted(srv.addr, load_and_save("sub/ok.latent"));
    let saved = &entry["outputs"]["2"]["latents"][0];
    assert_eq!(saved["filename"], "copy_00001_.latent", "{entry}");
    let annotated = format!("latents/{} [output]", saved["filename"].as_str().unwrap());
    accepted(srv.addr, load_and_save(&annotated));
    assert!(srv.dir.join("output/latents/copy_00002_.latent").is_file());
}

fn generate(ckpt: &str) -> Json {
    let loader: serde_json::Map<String, Json> = loader_inputs(ckpt)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut sampler: serde_json::Map<String, Json> = sampler_inputs(7, 1, 1.0, true)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    sampler.insert("model".into(), json!(["1", 0]));
    sampler.insert("latent_image".into(), json!(["2", 0]));
    sampler.insert("class_labels".into(), json!("3"));
    json!({
        "1": {"class_type": "ODEtODElCheckpointLoader", "inputs": loader},
        "2": {"class_type": "ODEtEmptyLatent", "inputs": {"model": ["1", 0], "batch_size": 1}},
        "3": {"class_type": "ODEtSampler", "inputs": sampler},
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "gen/x"}},
    })
}

#[test]
fn symlinked_and_extra_folder_checkpoints_load() {
    let f = fixture();
    let models = f.root.join("models-of-links");
    let extra = f.root.join("extra-checkpoints");
    let _ = std::fs::remove_dir_all(&models);
    let _ = std::fs::remove_dir_all(&extra);
    std::fs::create_dir_all(models.join("checkpoints")).unwrap();
    std::fs::create_dir_all(extra.join("sd")).unwrap();
    // The real checkpoint lives outside this models directory; the models directory only links to it.
    let real = f.models.join(names::FASHION);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&real, models.join("checkpoints/linked.safetensors")).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(&real, models.join("checkpoints/linked.safetensors")).unwrap();
    std::fs::copy(&real, extra.join("sd/elsewhere.safetensors")).unwrap();
    let yaml = f.root.join("extra_model_paths.yaml");
    std::fs::write(
        &yaml,
        format!(
            "other_tool:\n    base_path: {}\n    checkpoints: |\n        sd\n        missing\n",
            extra.display()
        ),
    )
    .unwrap();
    let dirs = ExtraModelDirs::load(&yaml).expect("the YAML reads");
    let srv = server("models", &models, dirs);

    // Both appear in the loader's choices.
    let (status, info) = http(
        srv.addr,
        "GET",
        "/object_info/ODEtODElCheckpointLoader",
        &Json::Null,
    );
    assert_eq!(status, 200);
    let choices = info["ODEtODElCheckpointLoader"]["input"]["required"]["ckpt_name"][0].to_string();
    assert!(
        choices.contains("checkpoints/linked.safetensors")
            && choices.contains("elsewhere.safetensors"),
        "{choices}"
    );
    // The combo offers them by these names, and both load and run.
    for name in ["checkpoints/linked.safetensors", "elsewhere.safetensors"] {
        let entry = accepted(srv.addr, generate(name));
        assert!(
            entry["outputs"]["4"]["latents"][0]["filename"].is_string(),
            "{name}: {entry}"
        );
    }
    // Names still cannot climb out of the folders (refused before anything is opened).
    for name in ["../models/fashion-dit.safetensors", "/etc/passwd"] {
        let (status, r) = http(
            srv.addr,
            "POST",
            "/prompt",
            &json!({"prompt": generate(name)}),
        );
        assert_eq!(status, 400, "{name}: {r}");
        assert!(r["node_errors"]["1"].is_object(), "{name}: {r}");
    }
}
