//! A plugin with simple nodes for the host's tests and benchmark: arithmetic, a panicking
//! node, a slow node with progress and cancellation, IMAGE producers/consumers, output nodes
//! (text and PNG with `prompt`/`workflow` tEXt chunks), opaque handles, custom validation,
//! device-bound work and a context reporter.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use odelt_contract::{
    export_plugin, linked_input, DType, ExecContext, Handle, InputSpec, NodeError, NodeInfo,
    NodeOutput, NodeRegistry, PreviewImage, TensorBuf, ValidationIssue, Value,
};

const CATEGORY: &str = "odelt-test";

/// Live `Counter` objects (created by MakeCounter, dropped when the host frees them).
static LIVE_COUNTERS: AtomicI64 = AtomicI64::new(0);
/// DeviceWork calls running right now.
static DEVICE_RUNNING: AtomicUsize = AtomicUsize::new(0);
/// CpuWork calls running right now.
static CPU_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// The object behind a COUNTER handle.
struct Counter {
    start: i64,
}

impl Counter {
    fn new(start: i64) -> Self {
        LIVE_COUNTERS.fetch_add(1, Ordering::SeqCst);
        Counter { start }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        LIVE_COUNTERS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn nodes() -> NodeRegistry {
    let mut r = NodeRegistry::new("odelt-test-plugin", env!("CARGO_PKG_VERSION"));
    arithmetic(&mut r);
    failures(&mut r);
    images(&mut r);
    outputs(&mut r);
    handles(&mut r);
    concurrency(&mut r);
    r
}

fn node(name: &str) -> NodeInfo {
    NodeInfo::new(name)
        .category(CATEGORY)
        .python_module("custom_nodes.odelt_test_plugin")
}

fn arithmetic(r: &mut NodeRegistry) {
    r.node(
        node("IntConstant")
            .description("Outputs its value.")
            .required("value", InputSpec::int().default(0))
            .output("INT", "INT"),
        |i, _| Ok(NodeOutput::new().with(i.int("value")?)),
    );
    r.node(
        node("FloatConstant")
            .required("value", InputSpec::float().default(0.0))
            .output("FLOAT", "FLOAT"),
        |i, _| Ok(NodeOutput::new().with(i.float("value")?)),
    );
    r.node(
        node("Add")
            .description("a + b (wrapping)")
            .required("a", InputSpec::int().default(0))
            .required("b", InputSpec::int().default(0))
            .output("INT", "sum"),
        |i, _| Ok(NodeOutput::new().with(i.int("a")?.wrapping_add(i.int("b")?))),
    );
    r.node(
        node("Multiply")
            .required("a", InputSpec::float().default(1.0))
            .required("b", InputSpec::float().default(1.0))
            .output("FLOAT", "product"),
        |i, _| Ok(NodeOutput::new().with(i.float("a")? * i.float("b")?)),
    );
    r.node(
        node("IntToFloat")
            .required("value", InputSpec::int())
            .output("FLOAT", "FLOAT"),
        |i, _| Ok(NodeOutput::new().with(i.int("value")? as f64)),
    );
    r.node(
        node("Bounded")
            .description(
                "Exercises every widget check: INT range, FLOAT range, combo, BOOLEAN, STRING.",
            )
            .required("count", InputSpec::int().default(1).min(0).max(10))
            .required(
                "ratio",
                InputSpec::float().default(0.5).min(0.0).max(1.0).step(0.01),
            )
            .required("mode", InputSpec::combo(["add", "mul"]))
            .required("flag", InputSpec::boolean().default(false))
            .optional("label", InputSpec::string().default(""))
            .optional("seed", InputSpec::int().default(0).min(0).max(u64::MAX))
            .output("INT", "count"),
        |i, _| {
            let mut n = i.int("count")?;
            if i.bool("flag")? {
                n += 100;
            }
            if let Some(seed) = i.opt_int("seed")? {
                n = n.wrapping_add(seed);
            }
            Ok(NodeOutput::new().with(n))
        },
    );
    r.node_with_validation(
        node("EvenOnly")
            .description(
                "Passes an even INT through; odd literals are refused by its validate hook.",
            )
            .required("value", InputSpec::int())
            .output("INT", "INT"),
        |i, _| Ok(NodeOutput::new().with(i.int("value")?)),
        |inputs| {
            // A literal, or a link straight from an IntConstant whose literal we can see.
            let (v, from) = match linked_input(inputs, "value") {
                Some(l) if l.class_type == "IntConstant" => (
                    l.literal("value").and_then(|v| v.as_i64()),
                    " (from IntConstant)",
                ),
                Some(_) => (None, ""),
                None => (inputs.get("value").and_then(|v| v.as_i64()), ""),
            };
            match v {
                Some(v) if v % 2 != 0 => {
                    vec![ValidationIssue::new("value", format!("{v} is odd{from}"))]
                }
                _ => Vec::new(),
            }
        },
    );
    r.node_with_validation(
        node("ValidateEcho")
            .description("Always refused: its validate hook returns the JSON map it received (to test what hooks see).")
            .optional("value", InputSpec::new("*"))
            .optional("number", InputSpec::int())
            .output_node(),
        |_, _| Ok(NodeOutput::new()),
        |inputs| vec![ValidationIssue::new("", serde_json::Value::Object(inputs.clone()).to_string())],
    );
}

fn failures(r: &mut NodeRegistry) {
    r.node(
        node("Panic")
            .description("Panics with the message (to test panic isolation).")
            .required("message", InputSpec::string().default("boom"))
            .optional("value", InputSpec::int())
            .output("INT", "INT"),
        |i, _| -> Result<NodeOutput, NodeError> {
            let msg = i.string("message")?.to_string();
            panic!("{msg}");
        },
    );
    r.node(
        node("Fail")
            .required("message", InputSpec::string().default("failed"))
            .output("INT", "INT"),
        |i, _| Err(NodeError::failed(i.string("message")?)),
    );
    r.node(
        node("SlowCount")
            .description("Counts to `steps`, sleeping `step_ms` per step, reporting progress; stops when cancelled.")
            .required("steps", InputSpec::int().default(10).min(1).max(100000))
            .required("step_ms", InputSpec::int().default(10).min(0).max(60000))
            .optional("preview", InputSpec::boolean().default(false))
            .optional("tag", InputSpec::int().default(0))
            .output("INT", "steps"),
        |i, ctx| {
            let steps = i.int("steps")? as u64;
            let step = Duration::from_millis(i.int("step_ms")? as u64);
            let preview = i.opt_bool("preview")?.unwrap_or(false);
            let rgb = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
            for s in 1..=steps {
                sleep(step);
                if preview {
                    ctx.progress_with_preview(s, steps, PreviewImage::rgb8(2, 2, &rgb))?;
                } else {
                    ctx.progress(s, steps)?;
                }
            }
            Ok(NodeOutput::new().with(steps as i64))
        },
    );
}

fn images(r: &mut NodeRegistry) {
    r.node(
        node("GradientImage")
            .description("A [B,H,W,3] f32 image in 0..1; second output = address of the pixel bytes (to check the host never copies them).")
            .required("width", InputSpec::int().default(8).min(1).max(8192))
            .required("height", InputSpec::int().default(8).min(1).max(8192))
            .optional("batch", InputSpec::int().default(1).min(1).max(64))
            .output("IMAGE", "IMAGE")
            .output("INT", "data_address"),
        |i, _| {
            let (w, h) = (i.int("width")? as u64, i.int("height")? as u64);
            let b = i.opt_int("batch")?.unwrap_or(1) as u64;
            let mut t = TensorBuf::zeros(DType::F32, &[b, h, w, 3])?;
            let denom = ((w + h).max(2) - 2) as f32;
            let fill = |v: &mut [f32]| {
                for (k, px) in v.chunks_exact_mut(3).enumerate() {
                    let k = k as u64 % (w * h);
                    let (y, x) = (k / w, k % w);
                    let g = if denom > 0.0 { (x + y) as f32 / denom } else { 0.0 };
                    px.copy_from_slice(&[g, 1.0 - g, 0.5]);
                }
            };
            match t.f32_values_mut() {
                Some(v) => fill(v),
                None => {
                    let mut v = t.f32_values()?.into_owned();
                    fill(&mut v);
                    t = TensorBuf::from_f32(&[b, h, w, 3], &v)?;
                }
            }
            let addr = t.data.as_ptr() as i64;
            Ok(NodeOutput::new().with(t).with(addr))
        },
    );
    r.node(
        node("InvertImage")
            .required("image", InputSpec::new("IMAGE"))
            .output("IMAGE", "IMAGE"),
        |i, _| {
            let t = i.tensor("image")?;
            let vals = t.f32_values()?;
            let mut out = TensorBuf::zeros(DType::F32, &t.shape)?;
            match out.f32_values_mut() {
                Some(o) => o
                    .iter_mut()
                    .zip(vals.iter())
                    .for_each(|(o, v)| *o = 1.0 - v),
                None => {
                    let v: Vec<f32> = vals.iter().map(|v| 1.0 - v).collect();
                    out = TensorBuf::from_f32(&t.shape, &v)?;
                }
            }
            Ok(NodeOutput::new().with(out))
        },
    );
    r.node(
        node("ImageMean")
            .required("image", InputSpec::new("IMAGE"))
            .output("FLOAT", "mean"),
        |i, _| {
            let v = i.tensor("image")?.f32_values()?;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
            Ok(NodeOutput::new().with(mean))
        },
    );
    r.node(
        node("TensorAddress")
            .description("Address of the received tensor's bytes.")
            .required("image", InputSpec::new("IMAGE"))
            .output("INT", "address"),
        |i, _| Ok(NodeOutput::new().with(i.tensor("image")?.data.as_ptr() as i64)),
    );
}

fn outputs(r: &mut NodeRegistry) {
    r.node(
        node("ShowNumber")
            .description("Output node: shows a number in the UI payload.")
            .required("value", InputSpec::new("INT,FLOAT"))
            .output_node(),
        |i, _| {
            let text = match i.get("value") {
                Some(Value::Int(v)) => v.to_string(),
                Some(Value::Float(v)) => v.to_string(),
                Some(other) => {
                    return Err(NodeError::invalid_input(
                        "value",
                        format!("not a number: {}", other.kind_name()),
                    ))
                }
                None => return Err(NodeError::invalid_input("value", "missing")),
            };
            Ok(NodeOutput::new().with_ui_text(&[text]))
        },
    );
    r.node(
        node("ShowText")
            .required("text", InputSpec::string().multiline())
            .output_node(),
        |i, _| Ok(NodeOutput::new().with_ui_text(&[i.string("text")?])),
    );
    r.node(
        node("ContextInfo")
            .description("Reports the execution context as JSON text.")
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .hidden("unique_id", "UNIQUE_ID")
            .optional("after", InputSpec::new("*"))
            .output("STRING", "info")
            .always_run(),
        |_, ctx| {
            let info = serde_json::json!({
                "node_id": ctx.node_id.as_str(),
                "class_type": ctx.class_type.as_str(),
                "prompt_id": ctx.prompt_id.as_str(),
                "device": ctx.device.as_str(),
                "output_dir": ctx.output_dir.as_str(),
                "temp_dir": ctx.temp_dir.as_str(),
                "models_dir": ctx.models_dir.as_str(),
                "has_prompt": ctx.prompt().is_some(),
                "workflow": ctx.workflow_json(),
            });
            Ok(NodeOutput::new().with(info.to_string()))
        },
    );
    r.node(
        node("TestSaveImage")
            .description(
                "Writes IMAGE batches as PNG files with `prompt` and `workflow` tEXt chunks.",
            )
            .required("images", InputSpec::new("IMAGE"))
            .required("filename_prefix", InputSpec::string().default("odelt"))
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .output_node(),
        |i, ctx| {
            let prefix = i.string("filename_prefix")?;
            if prefix.is_empty() || prefix.contains(['/', '\\']) || prefix.contains("..") {
                return Err(NodeError::invalid_input(
                    "filename_prefix",
                    "must be a plain file name prefix",
                ));
            }
            let img = i.tensor("images")?;
            let files = save_pngs(img, Path::new(ctx.output_dir.as_str()), prefix, ctx)?;
            Ok(NodeOutput::new().with_ui_images(files.iter().map(|f| (f.as_str(), "", "output"))))
        },
    );
}

fn save_pngs(
    img: &TensorBuf,
    dir: &Path,
    prefix: &str,
    ctx: &ExecContext<'_>,
) -> Result<Vec<String>, NodeError> {
    let dims = img.dims();
    let [b, h, w, c] = dims[..] else {
        return Err(NodeError::invalid_input(
            "images",
            format!("expected [B,H,W,C], got {dims:?}"),
        ));
    };
    if c != 3 && c != 4 {
        return Err(NodeError::invalid_input(
            "images",
            format!("expected 3 or 4 channels, got {c}"),
        ));
    }
    let vals = img.f32_values()?;
    fs::create_dir_all(dir)
        .map_err(|e| NodeError::failed(format!("creating {}: {e}", dir.display())))?;
    let prompt = ctx.prompt().map(ascii_json);
    let workflow = ctx.workflow_json().map(|w| ascii_json(&w));
    let mut names = Vec::new();
    let mut counter = 1u32;
    for k in 0..b {
        let (file, path) = loop {
            let name = format!("{prefix}_{counter:05}_.png");
            let p: PathBuf = dir.join(&name);
            counter += 1;
            match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(f) => break (f, name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && counter < 100_000 => {
                    continue
                }
                Err(e) => return Err(NodeError::failed(format!("creating {}: {e}", p.display()))),
            }
        };
        let pixels: Vec<u8> = vals[k * h * w * c..(k + 1) * h * w * c]
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        let mut enc = png::Encoder::new(BufWriter::new(file), w as u32, h as u32);
        enc.set_color(if c == 3 {
            png::ColorType::Rgb
        } else {
            png::ColorType::Rgba
        });
        enc.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| NodeError::failed(format!("writing {path}: {e}"));
        if let Some(p) = &prompt {
            enc.add_text_chunk("prompt".into(), p.clone())
                .map_err(png_err)?;
        }
        if let Some(wf) = &workflow {
            enc.add_text_chunk("workflow".into(), wf.clone())
                .map_err(png_err)?;
        }
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(&pixels).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
        names.push(path);
    }
    Ok(names)
}

/// JSON text with non-ASCII escaped as `\uXXXX` (tEXt chunks are Latin-1; ComfyUI writes ASCII).
fn ascii_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut buf = [0u16; 2];
            for u in ch.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

fn handles(r: &mut NodeRegistry) {
    r.node(
        node("MakeCounter")
            .description("Returns an opaque COUNTER handle (a plugin-owned object).")
            .required("start", InputSpec::int().default(0))
            .output("COUNTER", "counter"),
        |i, _| Ok(NodeOutput::new().with(Handle::new("COUNTER", Counter::new(i.int("start")?)))),
    );
    r.node(
        node("CounterValue")
            .required("counter", InputSpec::new("COUNTER"))
            .optional("add", InputSpec::int().default(0))
            .output("INT", "value"),
        |i, _| {
            let c = i.handle_as::<Counter>("counter")?;
            Ok(NodeOutput::new().with(c.start + i.opt_int("add")?.unwrap_or(0)))
        },
    );
    r.node(
        node("LiveCounters")
            .description("How many COUNTER objects are alive in this plugin.")
            .optional("after", InputSpec::new("*"))
            .output("INT", "live")
            .always_run(),
        |_, _| Ok(NodeOutput::new().with(LIVE_COUNTERS.load(Ordering::SeqCst))),
    );
}

/// Sleeps `ms`, tracking how many calls of the same kind overlap; returns the peak seen.
fn overlapping_work(
    running: &AtomicUsize,
    ms: u64,
    ctx: &ExecContext<'_>,
) -> Result<i64, NodeError> {
    let mut peak = running.fetch_add(1, Ordering::SeqCst) + 1;
    let end = Instant::now() + Duration::from_millis(ms);
    let result = loop {
        peak = peak.max(running.load(Ordering::SeqCst));
        if Instant::now() >= end {
            break Ok(peak as i64);
        }
        if let Err(e) = ctx.check_cancelled() {
            break Err(e);
        }
        sleep(Duration::from_millis(1));
    };
    running.fetch_sub(1, Ordering::SeqCst);
    result
}

fn concurrency(r: &mut NodeRegistry) {
    r.node(
        node("DeviceWork")
            .description("Device-bound sleep; returns the peak number of DeviceWork calls seen running at once.")
            .required("ms", InputSpec::int().default(50).min(0).max(60000))
            .optional("tag", InputSpec::int().default(0))
            .output("INT", "peak")
            .device_bound(),
        |i, ctx| {
            if ctx.device.is_empty() {
                return Err(NodeError::failed("no device assigned"));
            }
            Ok(NodeOutput::new().with(overlapping_work(&DEVICE_RUNNING, i.int("ms")? as u64, ctx)?))
        },
    );
    r.node(
        node("CpuWork")
            .description(
                "CPU sleep; returns the peak number of CpuWork calls seen running at once.",
            )
            .required("ms", InputSpec::int().default(50).min(0).max(60000))
            .optional("tag", InputSpec::int().default(0))
            .output("INT", "peak"),
        |i, ctx| {
            Ok(NodeOutput::new().with(overlapping_work(&CPU_RUNNING, i.int("ms")? as u64, ctx)?))
        },
    );
}

export_plugin!(nodes);

#[cfg(test)]
mod tests {
    use super::*;
    use odelt_contract::NamedValue;

    #[test]
    fn gradient_then_invert_then_mean() {
        let r = nodes();
        let ctx = ExecContext::detached();
        let img = r
            .execute(
                "GradientImage",
                &[
                    NamedValue::new("width", 4i64),
                    NamedValue::new("height", 2i64),
                ],
                &ctx,
            )
            .unwrap();
        let t = match &img.values[0] {
            Value::Tensor(t) => t.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(t.shape.as_slice(), &[1, 2, 4, 3]);
        let inv = r
            .execute("InvertImage", &[NamedValue::new("image", t.clone())], &ctx)
            .unwrap();
        let mean_a = r
            .execute("ImageMean", &[NamedValue::new("image", t)], &ctx)
            .unwrap();
        let mean_b = r
            .execute(
                "ImageMean",
                &[NamedValue {
                    name: "image".into(),
                    value: inv.values[0].clone(),
                }],
                &ctx,
            )
            .unwrap();
        match (&mean_a.values[0], &mean_b.values[0]) {
            (Value::Float(a), Value::Float(b)) => assert!((a + b - 1.0).abs() < 1e-6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ascii_json_escapes() {
        assert_eq!(ascii_json("a\u{e9}\u{1F600}"), "a\\u00e9\\ud83d\\ude00");
    }
}
