//! The official checkpoint files (`tiny.pkl`, `tiny-sm.pkl`, written by the official train.py layout) read by the
//! safe pickle reader must give exactly the parameters stored in the golden `tiny.npz`.

use std::path::PathBuf;

use candle_core::npy::NpzTensors;
use candle_core::DType;
use odelt_nodes::checkpoint::official::{
    describe, load_official_checkpoint, load_official_pkl, FlatParams, RawArray,
};
use odelt_nodes::checkpoint::pickle::{self, Value};
use odelt_nodes::checkpoint::WeightsSlot;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Every `param/<flax path>` of the golden npz, as f32 with its shape.
fn golden_params() -> FlatParams {
    let npz = NpzTensors::new(data("tiny.npz")).expect("tests/data/tiny.npz");
    let mut out = FlatParams::new();
    for name in npz.names() {
        let Some(path) = name.strip_prefix("param/") else {
            continue;
        };
        let t = npz.get(name).unwrap().unwrap();
        assert_eq!(t.dtype(), DType::F32, "{name}");
        out.insert(
            path.to_string(),
            RawArray {
                shape: t.dims().to_vec(),
                data: t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            },
        );
    }
    assert!(out.len() > 50, "golden npz has only {} params", out.len());
    out
}

fn assert_bit_exact(name: &str, got: &RawArray, want: &RawArray) {
    assert_eq!(got.shape, want.shape, "{name}: shape");
    assert_eq!(got.data.len(), want.data.len(), "{name}: length");
    for (i, (a, b)) in got.data.iter().zip(&want.data).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}]: {a} != {b}");
    }
}

#[test]
fn tiny_pkl_params_equal_golden_npz_bit_exactly() {
    let golden = golden_params();
    let ck = load_official_checkpoint(&data("tiny.pkl"), WeightsSlot::Params).unwrap();
    assert_eq!(ck.step, Some(12345));
    assert!(!ck.train_state_wrapper);
    assert_eq!(
        ck.top_level_keys,
        ["params", "params_ema", "opt_state", "step", "_timestamp"]
    );
    let got: Vec<&String> = ck.params.keys().collect();
    let want: Vec<&String> = golden.keys().collect();
    assert_eq!(got, want, "parameter names differ from the npz");
    for (name, want) in &golden {
        assert_bit_exact(name, &ck.params[name], want);
    }
    // Flax layouts are kept.
    assert_eq!(ck.params["PatchEmbed_0/Conv_0/kernel"].shape, [2, 2, 4, 64]);
    assert_eq!(ck.params["DiTBlock_0/Dense_0/kernel"].shape, [64, 384]);
    assert_eq!(
        ck.params["BlockEmbedder_0/Embed_0/embedding"].shape,
        [5, 64]
    );
}

#[test]
fn default_slot_is_params_and_ema_differs() {
    let path = data("tiny.pkl");
    let params = load_official_pkl(&path, WeightsSlot::default()).unwrap();
    let explicit = load_official_pkl(&path, WeightsSlot::Params).unwrap();
    assert_eq!(params, explicit);
    let ema = load_official_pkl(&path, WeightsSlot::ParamsEma).unwrap();
    assert_eq!(
        params.keys().collect::<Vec<_>>(),
        ema.keys().collect::<Vec<_>>()
    );
    let differing = params
        .iter()
        .filter(|(k, v)| ema[*k].data != v.data)
        .count();
    assert!(differing > 0, "params_ema should differ from params");
    for (k, v) in &params {
        assert_eq!(ema[k].shape, v.shape, "{k}");
    }
}

#[test]
fn bytes_and_path_sources_agree() {
    let bytes = std::fs::read(data("tiny.pkl")).unwrap();
    let from_bytes = load_official_pkl(&bytes, WeightsSlot::Params).unwrap();
    let from_path = load_official_pkl(data("tiny.pkl").as_path(), WeightsSlot::Params).unwrap();
    assert_eq!(from_bytes, from_path);
}

#[test]
fn tiny_sm_lacks_block_embedder_and_matches_the_rest() {
    let golden = golden_params();
    let ck = load_official_checkpoint(&data("tiny-sm.pkl"), WeightsSlot::Params).unwrap();
    assert_eq!(ck.step, Some(400001));
    assert!(!ck.params.keys().any(|k| k.starts_with("BlockEmbedder_0")));
    assert_eq!(ck.params.len(), golden.len() - 1);
    for (name, got) in &ck.params {
        assert_bit_exact(name, got, &golden[name]);
    }
}

#[test]
fn whole_tree_keeps_optax_states_as_inert_stubs() {
    let bytes = std::fs::read(data("tiny.pkl")).unwrap();
    let root = pickle::parse(&bytes).unwrap();
    let Some(Value::Tuple(opt)) = root.get("opt_state") else {
        panic!("opt_state is not a tuple: {}", root.outline(1));
    };
    let mut names = Vec::new();
    fn walk<'a>(v: &Value<'a>, names: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                names.push(format!("{}.{}", o.module, o.name));
                o.args.iter().for_each(|a| walk(a, names));
            }
            Value::Tuple(items) | Value::List(items) => items.iter().for_each(|a| walk(a, names)),
            _ => {}
        }
    }
    opt.iter().for_each(|v| walk(v, &mut names));
    assert!(
        names
            .iter()
            .any(|n| n == "optax._src.transform.ScaleByAdamState"),
        "{names:?}"
    );
    // ScaleByAdamState(count, mu, nu): mu holds the same tree of arrays as params.
    let adam = opt
        .iter()
        .find_map(|v| match v {
            Value::Tuple(t) => t.iter().find_map(|x| match x {
                Value::Object(o) if o.name == "ScaleByAdamState" => Some(o),
                _ => None,
            }),
            _ => None,
        })
        .expect("ScaleByAdamState");
    assert_eq!(adam.args.len(), 3);
    assert!(adam.args[0].as_i64().is_some(), "count");
    assert!(adam.args[1].get("DiTBlock_0").is_some(), "mu");
    let outline = root.outline(2);
    assert!(outline.contains("opt_state"), "{outline}");
    assert!(matches!(root.get("_timestamp"), Some(Value::Float(_))));
}

#[test]
fn describe_lists_every_param() {
    let params = load_official_pkl(&data("tiny.pkl"), WeightsSlot::Params).unwrap();
    let text = describe(&params);
    for name in params.keys() {
        assert!(
            text.contains(name.as_str()),
            "{name} missing from describe()"
        );
    }
    let total: usize = params.values().map(|a| a.data.len()).sum();
    assert!(
        text.contains(&format!("{} tensors, {total} parameters", params.len())),
        "{text}"
    );
}
