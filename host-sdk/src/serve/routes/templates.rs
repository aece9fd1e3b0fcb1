//! The example workflows (`examples/workflows/*.json`) as workflow templates: the stock ComfyUI
//! frontend's template dialog reads `/templates/index.json`, then `/templates/NAME.json` (a UI
//! workflow, converted here from the API prompt with node positions) and the thumbnail
//! `/templates/NAME-1.png`; the built-in editor uses the same routes for its Examples menu and
//! its first graph (`generate`).
//!
//! Only the examples this server can run are listed: every node class loaded, every choice
//! (checkpoint file, solver, ...) among the options `/object_info` offers. The thumbnails are
//! the examples' own output (made by host-sdk/web/templates/thumbnails.py).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value as Json};

use crate::serve::body::{json_ok, ApiError};
use crate::serve::extract::{path_arg, P, S};

/// One example workflow.
struct Example {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    prompt: &'static str,
    thumbnail: Option<&'static [u8]>,
}

/// The editor opens with this one the first time (its graph is what `web/editor.js` builds on a fresh profile).
#[cfg(test)]
pub(crate) const DEFAULT: &str = "generate";

const EXAMPLES: &[Example] = &[
    Example {
        name: "generate",
        title: "Generate Fashion-MNIST images",
        description: "The default graph: the shipped Fashion-MNIST DiT at full depth, one sample \
                      per class, 8 Euler steps.",
        prompt: include_str!("../../../../examples/workflows/generate.json"),
        thumbnail: Some(include_bytes!("../../../web/templates/generate-1.png")),
    },
    Example {
        name: "same_seed_every_length",
        title: "One seed at every length (l = 2, 4, 6)",
        description: "The same noise sampled with 2, 4 and 6 active blocks: what ODE_l trades \
                      between depth and quality.",
        prompt: include_str!("../../../../examples/workflows/same_seed_every_length.json"),
        thumbnail: Some(include_bytes!(
            "../../../web/templates/same_seed_every_length-1.png"
        )),
    },
    Example {
        name: "img2img_denoise",
        title: "img2img: sneakers to ankle boots",
        description: "Sample sneakers, re-noise them to t = 0.4 and sample the rest of the way \
                      as ankle boots (denoise 0.6).",
        prompt: include_str!("../../../../examples/workflows/img2img_denoise.json"),
        thumbnail: Some(include_bytes!(
            "../../../web/templates/img2img_denoise-1.png"
        )),
    },
    Example {
        name: "decode_with_vae",
        title: "ImageNet-256 DiT-B with the SD VAE",
        description: "The official ImageNet-256 DiT-B checkpoint at l = 8 of 12, decoded by \
                      the SD VAE ft-MSE (both files are yours to download into the models dir).",
        prompt: include_str!("../../../../examples/workflows/decode_with_vae.json"),
        thumbnail: None,
    },
];

fn example(name: &str) -> Option<&'static Example> {
    EXAMPLES.iter().find(|e| e.name == name)
}

fn parse(e: &Example) -> Map<String, Json> {
    match serde_json::from_str::<Json>(e.prompt) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The examples whose nodes and choices this server has, in menu order.
fn runnable(info: &Json) -> Vec<&'static Example> {
    EXAMPLES
        .iter()
        .filter(|e| can_run(&parse(e), info))
        .collect()
}

fn can_run(prompt: &Map<String, Json>, info: &Json) -> bool {
    !prompt.is_empty()
        && prompt.values().all(|n| {
            let Some(def) = n["class_type"].as_str().and_then(|c| info.get(c)) else {
                return false;
            };
            let inputs = n["inputs"].as_object().cloned().unwrap_or_default();
            inputs.iter().all(|(name, v)| {
                let Some(spec) = input_spec(def, name) else {
                    return false;
                };
                match (combo_options(spec), v) {
                    (Some(opts), Json::String(_)) => opts.contains(v),
                    _ => true,
                }
            })
        })
}

fn input_spec<'a>(def: &'a Json, name: &str) -> Option<&'a Json> {
    ["required", "optional"]
        .iter()
        .find_map(|g| def["input"][g].get(name))
}

fn combo_options(spec: &Json) -> Option<&Vec<Json>> {
    match &spec[0] {
        Json::Array(a) => Some(a),
        Json::String(s) if s == "COMBO" => spec[1]["options"].as_array(),
        _ => None,
    }
}

fn is_widget(spec: &Json) -> bool {
    let ty = match &spec[0] {
        Json::Array(_) => "COMBO",
        Json::String(s) => s.as_str(),
        _ => "",
    };
    matches!(ty, "INT" | "FLOAT" | "STRING" | "BOOLEAN" | "COMBO")
        && spec[1]["forceInput"].as_bool() != Some(true)
}

fn spec_type(spec: &Json) -> String {
    match &spec[0] {
        Json::Array(_) => "COMBO".into(),
        Json::String(s) => s.clone(),
        _ => "*".into(),
    }
}

/// ComfyUI's frontends add a "control after generate" value after an INT widget that asks for
/// one, and after every INT named seed or noise_seed.
fn has_control(name: &str, spec: &Json) -> bool {
    spec_type(spec) == "INT"
        && (spec[1].get("control_after_generate").is_some()
            || name == "seed"
            || name == "noise_seed")
}

/// The inputs of `def` in its `input_order` (required, then optional).
fn ordered_inputs(def: &Json) -> Vec<(String, Json)> {
    let mut out = Vec::new();
    for g in ["required", "optional"] {
        let specs = def["input"][g].as_object().cloned().unwrap_or_default();
        let names: Vec<String> = match def["input_order"][g].as_array() {
            Some(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            None => specs.keys().cloned().collect(),
        };
        for n in names {
            if let Some(s) = specs.get(&n) {
                out.push((n, s.clone()));
            }
        }
    }
    out
}

/// Width and estimated height of a node in both editors (title bar, one row per socket or
/// widget).
fn node_size(def: &Json) -> (f64, f64) {
    let rows = ordered_inputs(def).len() + def["output"].as_array().map_or(0, Vec::len);
    (300.0, 36.0 + 26.0 * rows as f64)
}

/// The API prompt as a ComfyUI UI workflow (version 0.4): nodes in columns by their distance
/// from the sources, each column stacked top to bottom; output nodes wider, for their images.
pub(crate) fn to_workflow(prompt: &Map<String, Json>, info: &Json, title: &str) -> Json {
    // Columns: longest path from a source.
    let mut depth: Map<String, Json> = Map::new();
    fn depth_of(id: &str, p: &Map<String, Json>, memo: &mut Map<String, Json>, guard: u32) -> u64 {
        if let Some(d) = memo.get(id).and_then(Json::as_u64) {
            return d;
        }
        let mut d = 0;
        if guard < 64 {
            for v in p[id]["inputs"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|x| x.1)
            {
                if let Some(src) = link_source(v).filter(|s| p.contains_key(*s)) {
                    d = d.max(depth_of(src, p, memo, guard + 1) + 1);
                }
            }
        }
        memo.insert(id.to_string(), json!(d));
        d
    }
    let mut ids: Vec<&String> = prompt.keys().collect();
    ids.sort_by_key(|k| (k.parse::<u64>().unwrap_or(u64::MAX), (*k).clone()));
    for id in &ids {
        depth_of(id, prompt, &mut depth, 0);
    }
    let max_depth = depth.values().filter_map(Json::as_u64).max().unwrap_or(0);
    let mut col_x = vec![0.0f64; max_depth as usize + 2];
    let mut col_y = vec![0.0f64; max_depth as usize + 1];
    for d in 0..=max_depth as usize {
        let wide = ids.iter().any(|id| {
            depth[id.as_str()].as_u64() == Some(d as u64)
                && info[prompt[id.as_str()]["class_type"].as_str().unwrap_or("")]["output_node"]
                    == true
        });
        col_x[d + 1] = col_x[d] + if wide { 400.0 } else { 340.0 };
    }

    let mut nodes = Vec::new();
    let mut links: Vec<Json> = Vec::new();
    // Input slot indices of each node, to resolve link targets.
    let mut rows = Vec::new();
    for (order, id) in ids.iter().enumerate() {
        let n = &prompt[id.as_str()];
        let class = n["class_type"].as_str().unwrap_or("");
        let def = &info[class];
        let given = n["inputs"].as_object().cloned().unwrap_or_default();
        let all = ordered_inputs(def);
        // Sockets first, then the widgets (as the stock frontend lists them).
        let (widgets, sockets): (Vec<_>, Vec<_>) = all.iter().partition(|(_, s)| is_widget(s));
        let mut inputs = Vec::new();
        let mut values = Vec::new();
        for (name, spec) in sockets.iter().chain(widgets.iter()) {
            let mut o = json!({"name": name, "type": spec_type(spec), "link": null});
            if is_widget(spec) {
                o["widget"] = json!({"name": name});
            }
            inputs.push(o);
        }
        for (name, spec) in &widgets {
            let v = match given.get(name) {
                Some(v) if link_source(v).is_none() => v.clone(),
                _ => spec[1].get("default").cloned().unwrap_or(Json::Null),
            };
            values.push(v);
            if has_control(name, spec) {
                values.push(json!("fixed"));
            }
        }
        let outputs: Vec<Json> = def["output"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(slot, t)| {
                let name = def["output_name"][slot]
                    .as_str()
                    .or(t.as_str())
                    .unwrap_or("*");
                json!({"name": name, "type": t, "links": [], "slot_index": slot})
            })
            .collect();
        let d = depth[id.as_str()].as_u64().unwrap_or(0) as usize;
        let (w, h) = node_size(def);
        let w = if def["output_node"] == true {
            w + 60.0
        } else {
            w
        };
        let mut node = json!({
            "id": num_id(id), "type": class, "pos": [col_x[d], col_y[d]], "size": [w, h],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": class}, "widgets_values": values,
        });
        col_y[d] += h + if def["output_node"] == true {
            240.0
        } else {
            50.0
        };
        if let Some(t) = n["_meta"]["title"].as_str() {
            node["title"] = json!(t);
        }
        rows.push((id.to_string(), given));
        nodes.push(node);
    }
    for (k, (id, given)) in rows.iter().enumerate() {
        for (name, v) in given {
            let Some(src) = link_source(v).filter(|s| prompt.contains_key(*s)) else {
                continue;
            };
            let slot = v[1].as_u64().unwrap_or(0);
            let Some(target_slot) = nodes[k]["inputs"]
                .as_array()
                .and_then(|a| a.iter().position(|i| i["name"] == name.as_str()))
            else {
                continue;
            };
            let link_id = links.len() as u64 + 1;
            let Some(src_k) = rows.iter().position(|(i, _)| i == src) else {
                continue;
            };
            let ty = nodes[src_k]["outputs"][slot as usize]["type"].clone();
            links.push(json!([
                link_id,
                num_id(src),
                slot,
                num_id(id),
                target_slot,
                ty
            ]));
            nodes[k]["inputs"][target_slot]["link"] = json!(link_id);
            if let Some(l) = nodes[src_k]["outputs"][slot as usize]["links"].as_array_mut() {
                l.push(json!(link_id));
            }
        }
    }
    let last_node = ids.iter().filter_map(|k| k.parse::<u64>().ok()).max();
    json!({
        "last_node_id": last_node.unwrap_or(ids.len() as u64),
        "last_link_id": links.len(),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"odelt": {"template": title}},
        "version": 0.4,
    })
}

fn link_source(v: &Json) -> Option<&str> {
    match v.as_array().map(Vec::as_slice) {
        Some([Json::String(id), Json::Number(_)]) => Some(id.as_str()),
        _ => None,
    }
}

fn num_id(id: &str) -> Json {
    match id.parse::<u64>() {
        Ok(n) if n.to_string() == id => json!(n),
        _ => json!(id),
    }
}

/// `GET /templates/index.json` (and its localized `index.LOCALE.json`): one category of the
/// examples this server can run.
fn index(info: &Json) -> Json {
    let templates: Vec<Json> = runnable(info)
        .iter()
        .map(|e| {
            json!({
                "name": e.name, "title": e.title, "description": e.description,
                "mediaType": "image", "mediaSubtype": "png", "tags": ["odelt", "ODE_t(ODE_l)"],
            })
        })
        .collect();
    json!([{
        "moduleName": "default", "category": "odelt", "title": "odelt examples",
        "type": "image", "templates": templates,
    }])
}

fn not_found(what: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no workflow template '{what}'"),
    )
    .into_response()
}

/// `GET /templates/{file}`: `index.json`, `NAME.json` (UI workflow), `NAME.api.json` (the
/// API prompt as committed), `NAME-1.png` (thumbnail).
pub(crate) async fn file(axum::extract::State(s): S, file: P) -> Result<Response, ApiError> {
    let f = path_arg(file)?;
    let info = s.exec.object_info();
    if f == "index.json" || (f.starts_with("index.") && f.ends_with(".json")) {
        return Ok(json_ok(&index(&info)));
    }
    if f == "index_logo.json" {
        return Ok(json_ok(&json!({})));
    }
    let listed = runnable(&info);
    let find = |name: &str| listed.iter().copied().find(|e| e.name == name);
    if let Some(name) = f.strip_suffix(".api.json") {
        return Ok(match find(name) {
            Some(e) => json_ok(&Json::Object(parse(e))),
            None => not_found(name),
        });
    }
    if let Some(name) = f.strip_suffix(".json") {
        return Ok(match find(name) {
            Some(e) => json_ok(&to_workflow(&parse(e), &info, e.title)),
            None => not_found(name),
        });
    }
    if let Some(name) = f.strip_suffix("-1.png") {
        return Ok(
            match example(name)
                .filter(|e| find(e.name).is_some())
                .and_then(|e| e.thumbnail)
            {
                Some(png) => (
                    [
                        (header::CONTENT_TYPE, "image/png"),
                        (header::CACHE_CONTROL, "max-age=3600"),
                    ],
                    png,
                )
                    .into_response(),
                None => not_found(name),
            },
        );
    }
    Ok(not_found(&f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Json {
        json!({
            "Src": {"input": {"required": {"n": ["INT", {"default": 1}],
                                            "file": [["a.bin", "b.bin"], {}]}},
                    "input_order": {"required": ["n", "file"]},
                    "output": ["X"], "output_name": ["X"], "output_node": false},
            "Use": {"input": {"required": {"x": ["X", {}], "seed": ["INT", {"default": 0}],
                                            "text": ["STRING", {}]}},
                    "input_order": {"required": ["x", "seed", "text"]},
                    "output": [], "output_name": [], "output_node": true},
        })
    }

    fn prompt(file: &str) -> Map<String, Json> {
        json!({"1": {"class_type": "Src", "inputs": {"n": 3, "file": file}},
               "2": {"class_type": "Use", "_meta": {"title": "use it"},
                     "inputs": {"x": ["1", 0], "seed": 7, "text": "hi"}}})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn api_prompt_becomes_a_ui_workflow_with_positions_links_and_widget_values() {
        let wf = to_workflow(&prompt("b.bin"), &info(), "t");
        assert_eq!(wf["version"], 0.4);
        assert_eq!(wf["links"], json!([[1, 1, 0, 2, 0, "X"]]));
        let n1 = &wf["nodes"][0];
        let n2 = &wf["nodes"][1];
        assert_eq!(n1["widgets_values"], json!([3, "b.bin"]));
        // A seed gets the frontend's "control after generate" value, kept fixed.
        assert_eq!(n2["widgets_values"], json!([7, "fixed", "hi"]));
        assert_eq!(n2["title"], "use it");
        assert_eq!(
            n2["inputs"][0],
            json!({"name": "x", "type": "X", "link": 1})
        );
        assert_eq!(n2["inputs"][1]["widget"]["name"], "seed");
        assert_eq!(n1["outputs"][0]["links"], json!([1]));
        assert!(n2["pos"][0].as_f64().unwrap() > n1["pos"][0].as_f64().unwrap());
    }

    #[test]
    fn only_examples_with_their_nodes_and_files_are_runnable() {
        assert!(can_run(&prompt("a.bin"), &info()));
        assert!(!can_run(&prompt("missing.bin"), &info()));
        assert!(!can_run(&prompt("a.bin"), &json!({"Src": info()["Src"]})));
    }

    #[test]
    fn the_committed_examples_parse() {
        for e in EXAMPLES {
            assert!(!parse(e).is_empty(), "{}", e.name);
        }
        assert!(example(DEFAULT).is_some());
    }
}
