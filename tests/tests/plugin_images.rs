//! Images in, through the built plugin: LoadImage (PNG, JPEG, alpha → MASK), ImageScale, ODEtEncode, img2img at
//! denoise 0 and 1, SetLatentNoiseMask inpainting, the example workflows, and bad files (truncated, a
//! decompression-bomb header, a link leading outside the input directory, text named `.png`) refused with clear
//! errors while the executor keeps working.

use std::path::{Path, PathBuf};

use odelt_host::{Executor, ExecutorConfig, RunError, Workflow};
use odelt_tests::{example, fixture, run, run_ok, tensor_output};
use serde_json::{json, Value as Json};

/// A fresh input directory and an executor over the fixture's models with it.
fn setup(tag: &str) -> (PathBuf, Executor) {
    let f = fixture();
    let input = f.root.join(format!("input-{tag}"));
    let _ = std::fs::remove_dir_all(&input);
    std::fs::create_dir_all(&input).unwrap();
    let exec = Executor::new(
        f.plugins.clone(),
        ExecutorConfig {
            workers: 2,
            device: "cpu".into(),
            output_dir: f.output.clone(),
            temp_dir: f.temp.clone(),
            models_dir: f.models.clone(),
            input_dir: input.clone(),
            cache_runs: 0,
            ..ExecutorConfig::default()
        },
    );
    (input, exec)
}

fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    e.set_color(color);
    e.set_depth(png::BitDepth::Eight);
    e.write_header().unwrap().write_image_data(data).unwrap();
}

/// A 28x28 grey test pattern (R = G = B) as RGB bytes.
fn grey_pattern(seed: u32) -> Vec<u8> {
    (0..28 * 28)
        .flat_map(|i| {
            let (y, x) = (i / 28, i % 28);
            let v = ((x * 9 + y * 5 + seed * 37) % 256) as u8;
            [v, v, v]
        })
        .collect()
}

fn loader() -> Json {
    json!({"class_type": "ODEtODElCheckpointLoader", "inputs": {
        "ckpt_name": "fashion-dit.safetensors", "weights": "params", "preset": "auto", "num_heads": 0,
        "depth_group": 0, "depth_min": 0, "input_size": 0, "latent_scale": 0.0, "precision": "fp32"}})
}

fn sampler(latent: Json, seed: u64, denoise: f64) -> Json {
    json!({"class_type": "ODEtSampler", "inputs": {
        "model": ["1", 0], "latent_image": latent, "seed": seed, "steps": 4, "solver": "euler",
        "tolerance": 0.001, "cfg": 1.0, "class_label": 3, "class_labels": "", "denoise": denoise,
        "add_noise": true}})
}

fn workflow(nodes: Json) -> Workflow {
    Workflow::from_json(nodes).expect("a prompt in API form")
}

/// LoadImage → ODEtEncode → ODEtDecode → PreviewImage.
fn roundtrip_prompt(name: &str) -> Workflow {
    workflow(json!({
        "1": loader(),
        "2": {"class_type": "LoadImage", "inputs": {"image": name}},
        "3": {"class_type": "ODEtEncode", "inputs": {"pixels": ["2", 0], "model": ["1", 0], "mode": "mean", "seed": 0}},
        "4": {"class_type": "ODEtDecode", "inputs": {"samples": ["3", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    }))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn bytes01(b: &[u8]) -> Vec<f32> {
    b.iter().map(|&v| v as f32 / 255.0).collect()
}

#[test]
fn png_and_jpeg_round_trip_through_encode_and_decode() {
    let (input, exec) = setup("roundtrip");
    let px = grey_pattern(1);
    write_png(&input.join("grey.png"), 28, 28, png::ColorType::Rgb, &px);
    let o = run_ok(&exec, &roundtrip_prompt("grey.png"));
    let (shape, img) = tensor_output(&o, "4", 0);
    assert_eq!(shape, vec![1, 28, 28, 3]);
    let d = max_diff(&img, &bytes01(&px));
    assert!(d <= 1.0 / 255.0, "PNG round trip off by {d}");
    assert!(
        d < 1e-5,
        "a grey PNG round-trips exactly (up to float rounding): {d}"
    );

    // JPEG is lossy: the round trip is checked against the JPEG's own decoded pixels.
    let grey: Vec<u8> = px.iter().step_by(3).copied().collect();
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
        .encode(&grey, 28, 28, image::ExtendedColorType::L8)
        .unwrap();
    std::fs::write(input.join("grey.jpg"), &jpg).unwrap();
    let want = image::load_from_memory(&jpg).unwrap().to_rgb8().into_raw();
    let o = run_ok(&exec, &roundtrip_prompt("grey.jpg"));
    let (_, img) = tensor_output(&o, "4", 0);
    let d = max_diff(&img, &bytes01(&want));
    assert!(d <= 1.0 / 255.0, "JPEG round trip off by {d}");
}

#[test]
fn alpha_becomes_the_mask() {
    let (input, exec) = setup("alpha");
    let rgba: Vec<u8> = (0..4u8 * 3)
        .flat_map(|i| [i * 20, 0, 255 - i * 20, i * 21])
        .collect();
    write_png(&input.join("a.png"), 4, 3, png::ColorType::Rgba, &rgba);
    let wf = workflow(json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    }));
    let o = run_ok(&exec, &wf);
    let (shape, mask) = tensor_output(&o, "1", 1);
    assert_eq!(shape, vec![1, 3, 4]);
    let want: Vec<f32> = rgba.chunks(4).map(|p| 1.0 - p[3] as f32 / 255.0).collect();
    assert!(max_diff(&mask, &want) < 1e-6);
    let (shape, img) = tensor_output(&o, "1", 0);
    assert_eq!(shape, vec![1, 3, 4, 3]);
    assert_eq!(img[2], 1.0);
    // A file without alpha: zeros of its size.
    write_png(
        &input.join("rgb.png"),
        2,
        2,
        png::ColorType::Rgb,
        &[9u8; 12],
    );
    let wf = workflow(json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "rgb.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    }));
    let (shape, mask) = tensor_output(&run_ok(&exec, &wf), "1", 1);
    assert_eq!((shape, mask), (vec![1, 2, 2], vec![0.0; 4]));
}

/// LoadImage → ImageScale (to the model) → ODEtEncode → ODEtSampler → ODEtDecode.
fn img2img(name: &str, seed: u64, denoise: f64) -> Workflow {
    workflow(json!({
        "1": loader(),
        "2": {"class_type": "LoadImage", "inputs": {"image": name}},
        "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "area", "width": 0,
              "height": 0, "crop": "center", "color": "keep", "model": ["1", 0]}},
        "4": {"class_type": "ODEtEncode", "inputs": {"pixels": ["3", 0], "model": ["1", 0], "mode": "mean", "seed": 0}},
        "5": sampler(json!(["4", 0]), seed, denoise),
        "6": {"class_type": "ODEtDecode", "inputs": {"samples": ["5", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    }))
}

#[test]
fn img2img_from_a_file_at_denoise_0_and_1() {
    let (input, exec) = setup("img2img");
    // 56x42 pictures: area-scaled and centre-cropped to 28x28.
    let a: Vec<u8> = (0..56 * 42)
        .flat_map(|i| {
            let v = (i % 56 * 4) as u8;
            [v, v, v]
        })
        .collect();
    let b: Vec<u8> = (0..56 * 42)
        .flat_map(|i| {
            let v = (i / 56 * 6) as u8;
            [v, v, v]
        })
        .collect();
    write_png(&input.join("a.png"), 56, 42, png::ColorType::Rgb, &a);
    write_png(&input.join("b.png"), 56, 42, png::ColorType::Rgb, &b);
    let o = run_ok(&exec, &img2img("a.png", 5, 0.0));
    let (shape, scaled) = tensor_output(&o, "3", 0);
    assert_eq!(shape, vec![1, 28, 28, 3]);
    let (_, out) = tensor_output(&o, "6", 0);
    let d = max_diff(&out, &scaled);
    assert!(d < 1e-5, "denoise 0 returns the input (off by {d})");
    // At denoise 1 the source is ignored: two pictures, one seed, the same samples.
    let (_, from_a) = tensor_output(&run_ok(&exec, &img2img("a.png", 5, 1.0)), "6", 0);
    let (_, from_b) = tensor_output(&run_ok(&exec, &img2img("b.png", 5, 1.0)), "6", 0);
    assert_eq!(from_a, from_b);
    assert!(max_diff(&from_a, &scaled) > 0.05);
}

#[test]
fn masked_sampling_keeps_the_outside_and_regenerates_the_inside() {
    let (input, exec) = setup("inpaint");
    // Transparent (mask 1: regenerate) on the left half, opaque (kept) on the right.
    let px: Vec<u8> = (0..28 * 28)
        .flat_map(|i| {
            let (y, x) = (i / 28, i % 28);
            let v = ((x * 7 + y * 3) % 200 + 30) as u8;
            [v, v, v, if x < 14 { 0 } else { 255 }]
        })
        .collect();
    write_png(&input.join("hole.png"), 28, 28, png::ColorType::Rgba, &px);
    let wf = workflow(json!({
        "1": loader(),
        "2": {"class_type": "LoadImage", "inputs": {"image": "hole.png"}},
        "3": {"class_type": "ODEtEncode", "inputs": {"pixels": ["2", 0], "model": ["1", 0], "mode": "mean", "seed": 0}},
        "4": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["3", 0], "mask": ["2", 1]}},
        "5": sampler(json!(["4", 0]), 3, 0.8),
        "6": {"class_type": "ODEtDecode", "inputs": {"samples": ["5", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
        // The same without the mask, for comparison.
        "8": sampler(json!(["3", 0]), 3, 0.8),
        "9": {"class_type": "ODEtDecode", "inputs": {"samples": ["8", 0]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}}
    }));
    let o = run_ok(&exec, &wf);
    let (_, out) = tensor_output(&o, "6", 0);
    let (_, src) = tensor_output(&o, "2", 0);
    let (_, unmasked) = tensor_output(&o, "9", 0);
    let (mut kept, mut changed) = (0f32, 0f32);
    for y in 0..28 {
        for x in 0..28 {
            let i = (y * 28 + x) * 3;
            let d = (out[i] - src[i]).abs();
            if x >= 14 {
                kept = kept.max(d);
            } else {
                changed = changed.max(d);
            }
        }
    }
    assert!(
        kept <= 1.0 / 255.0,
        "outside the mask the source stays (off by {kept})"
    );
    assert!(
        changed > 0.05,
        "inside the mask the sampler regenerates (max change {changed})"
    );
    // Without the mask the right half changes too.
    let right = (0..28 * 28)
        .filter(|i| i % 28 >= 14)
        .map(|i| (unmasked[i * 3] - src[i * 3]).abs())
        .fold(0f32, f32::max);
    assert!(right > 0.05, "{right}");
    // The masked latent decodes as a plain one (the mask is ignored outside the sampler).
    assert_eq!(tensor_output(&o, "4", 0), tensor_output(&o, "3", 0));
}

/// The error text of a failed run: validation messages or the node's message.
fn failure(exec: &Executor, wf: &Workflow) -> String {
    match run(exec, wf, None).0 {
        Ok(_) => panic!("the run should fail"),
        Err(RunError::Validation(v)) => Json::Object(v.node_errors.clone()).to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_clear_errors_and_the_executor_keeps_working() {
    let (input, exec) = setup("bad");
    write_png(
        &input.join("ok.png"),
        28,
        28,
        png::ColorType::Rgb,
        &grey_pattern(2),
    );
    let bytes = std::fs::read(input.join("ok.png")).unwrap();
    std::fs::write(input.join("cut.png"), &bytes[..bytes.len() - 40]).unwrap();
    std::fs::write(input.join("notes.png"), b"just some text, not a picture\n").unwrap();
    {
        // A header claiming 30000 x 30000 and a few bytes of pixel data.
        let f = std::fs::File::create(input.join("bomb.png")).unwrap();
        let mut e = png::Encoder::new(f, 30000, 30000);
        e.set_color(png::ColorType::Rgb);
        let mut w = e.write_header().unwrap();
        // A start of compressed data, as a real bomb has (the header is all that is read).
        w.write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0xed, 0xc1, 0x01])
            .unwrap();
        drop(w);
    }
    let secret = input.parent().unwrap().join("secret-outside.png");
    std::fs::copy(input.join("ok.png"), &secret).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&secret, input.join("link.png")).unwrap();

    // The combo lists what is there (the link too: it is refused when used).
    let info = exec.object_info();
    let listed = &info["LoadImage"]["input"]["required"]["image"][0];
    for n in ["ok.png", "cut.png", "notes.png", "bomb.png"] {
        assert!(
            listed.as_array().unwrap().iter().any(|v| v == n),
            "{n} not in {listed}"
        );
    }

    let e = failure(&exec, &roundtrip_prompt("cut.png"));
    assert!(
        e.contains("cut.png") && e.contains("damaged or cut short"),
        "{e}"
    );
    let e = failure(&exec, &roundtrip_prompt("bomb.png"));
    assert!(e.contains("30000x30000") && e.contains("limit"), "{e}");
    let e = failure(&exec, &roundtrip_prompt("notes.png"));
    assert!(e.contains("not a PNG, JPEG or WebP"), "{e}");
    let e = failure(&exec, &roundtrip_prompt("../secret-outside.png"));
    assert!(e.contains("secret-outside.png"), "{e}");
    #[cfg(unix)]
    {
        let e = failure(&exec, &roundtrip_prompt("link.png"));
        assert!(e.contains("outside"), "{e}");
        assert!(
            !e.contains(&input.display().to_string()),
            "no absolute paths: {e}"
        );
    }
    // A wrong size for the model is explained.
    write_png(
        &input.join("small.png"),
        8,
        8,
        png::ColorType::Rgb,
        &[50u8; 8 * 8 * 3],
    );
    let e = failure(&exec, &roundtrip_prompt("small.png"));
    assert!(e.contains("8x8") && e.contains("ImageScale"), "{e}");

    // And the good file still runs.
    run_ok(&exec, &roundtrip_prompt("ok.png"));
}

#[test]
fn example_workflows_run_on_the_committed_image() {
    let (input, exec) = setup("examples");
    let root = odelt_tests::repo_root();
    std::fs::copy(
        root.join("examples/images/fashion_sample.png"),
        input.join("fashion_sample.png"),
    )
    .unwrap();
    for (name, sampler, save) in [
        ("img2img_from_file.json", "5", "7"),
        ("inpaint_region.json", "6", "8"),
    ] {
        let mut wf = example(name);
        // Fewer steps keep the test quick.
        wf.set(sampler, "steps", json!(2)).unwrap();
        wf.set(
            save,
            "filename_prefix",
            json!(format!("examples-test/{name}")),
        )
        .unwrap();
        let o = run_ok(&exec, &wf);
        let imgs = odelt_tests::ui_images(&o, save, "images");
        assert_eq!(imgs.len(), 1, "{name}: {imgs:?}");
    }
}
