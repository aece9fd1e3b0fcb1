//! Pickles written by CPython + numpy (+ ml_dtypes) in protocols 2–5 (`tests/data/pickle/gen_fixtures.py`) read by
//! the safe reader: every array must match the values Python recorded in `<name>.expected.json`.

use std::borrow::Cow;
use std::path::PathBuf;

use odelt_nodes::checkpoint::official::{load_official_checkpoint, load_official_pkl};
use odelt_nodes::checkpoint::pickle::{self, ElemType, NdArray, Value};
use odelt_nodes::checkpoint::WeightsSlot;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pickle")
        .join(name)
}

fn expected(name: &str) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Follows a '/'-joined path through dicts and namedtuple stubs (fields count, mu, nu).
fn resolve<'v, 'a>(root: &'v Value<'a>, path: &str) -> &'v Value<'a> {
    let mut v = root;
    for part in path.split('/') {
        v = match v {
            Value::Dict(_) => v.get(part).unwrap_or_else(|| panic!("{path}: no {part}")),
            Value::Object(o) => {
                let i = ["count", "mu", "nu"]
                    .iter()
                    .position(|f| *f == part)
                    .unwrap_or_else(|| panic!("{path}: field {part}"));
                &o.args[i]
            }
            other => panic!("{path}: {part} inside a {}", other.type_name()),
        };
    }
    v
}

fn numpy_dtype_name(a: &NdArray<'_>) -> String {
    let n = a.dtype.elem.name();
    if a.dtype.big_endian && a.dtype.elem.size() > 1 {
        let code = match a.dtype.elem {
            ElemType::F32 => "f4",
            ElemType::F64 => "f8",
            ElemType::I64 => "i8",
            ElemType::I32 => "i4",
            _ => n,
        };
        format!(">{code}")
    } else {
        n.to_string()
    }
}

fn check_array(path: &str, a: &NdArray<'_>, exp: &serde_json::Value) {
    let shape: Vec<usize> = exp["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(a.shape, shape, "{path}: shape");
    assert_eq!(
        numpy_dtype_name(a),
        exp["dtype"].as_str().unwrap(),
        "{path}: dtype"
    );
    let values = exp["values"].as_array().unwrap();
    if a.dtype.elem.is_float() {
        let got = a.to_f32_vec().unwrap();
        assert_eq!(got.len(), values.len(), "{path}");
        for (i, (g, w)) in got.iter().zip(values).enumerate() {
            let w = w.as_f64().unwrap() as f32;
            assert_eq!(g.to_bits(), w.to_bits(), "{path}[{i}]: {g} != {w}");
        }
    } else {
        let got = a.to_i64_vec().unwrap();
        let want: Vec<i64> = values.iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(got, want, "{path}");
    }
}

fn check_mixed(name: &str) {
    let bytes = std::fs::read(fixture(&format!("{name}.pkl"))).unwrap();
    let root = pickle::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let exp = expected(name);
    assert!(
        exp.len() >= 15,
        "{name}: only {} expected arrays",
        exp.len()
    );
    for (path, e) in &exp {
        let v = resolve(&root, path);
        let a = v
            .as_array()
            .unwrap_or_else(|| panic!("{name}/{path} is a {}", v.type_name()));
        check_array(&format!("{name}/{path}"), a, e);
    }
    // Scalars vs 0-d arrays.
    assert!(
        root.get("scalar_f32")
            .unwrap()
            .as_array()
            .unwrap()
            .numpy_scalar
    );
    assert!(!root.get("zero_d").unwrap().as_array().unwrap().numpy_scalar);
    assert_eq!(root.get("scalar_i64").unwrap().as_i64(), Some(-9));
    // Fortran order really was exercised.
    assert!(
        root.get("f32_big_fortran")
            .unwrap()
            .as_array()
            .unwrap()
            .fortran_order
    );

    let plain = root.get("plain").unwrap();
    assert_eq!(plain.get("none"), Some(&Value::None));
    assert_eq!(plain.get("true"), Some(&Value::Bool(true)));
    assert_eq!(plain.get("int"), Some(&Value::Int(-5)));
    // 2**70 + 3, little-endian two's complement.
    assert_eq!(
        plain.get("big"),
        Some(&Value::BigInt(Cow::Borrowed(
            &[3, 0, 0, 0, 0, 0, 0, 0, 0x40][..]
        )))
    );
    assert_eq!(plain.get("float"), Some(&Value::Float(0.1)));
    assert_eq!(plain.get("str").and_then(Value::as_str), Some("héllo"));
    match plain.get("bytes") {
        Some(Value::Bytes(b)) => assert_eq!(&b[..], b"\x00\xffab"),
        other => panic!("{name}: bytes = {other:?}"),
    }
    assert_eq!(
        plain.get("list"),
        Some(&Value::List(vec![
            Value::Int(1),
            Value::List(vec![
                Value::Int(2),
                Value::Tuple(vec![Value::Int(3), Value::Int(4)])
            ])
        ]))
    );
    assert_eq!(plain.get("set"), Some(&Value::Set(vec![Value::Int(7)])));
    assert_eq!(
        plain.get("frozenset"),
        Some(&Value::Set(vec![Value::Int(8)]))
    );
    let odict = plain.get("odict").and_then(Value::as_dict).unwrap();
    let keys: Vec<_> = odict.iter().map(|(k, _)| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["b", "a"], "{name}: OrderedDict order");
    // The optax-like namedtuple is an inert stub.
    match root.get("opt") {
        Some(Value::Object(o)) => {
            assert_eq!(
                (o.module.as_str(), o.name.as_str()),
                ("trainlib.state", "AdamLike")
            )
        }
        other => panic!("{name}: opt = {other:?}"),
    }
}

#[test]
fn protocol_2() {
    check_mixed("mixed_p2");
}

#[test]
fn protocol_3() {
    check_mixed("mixed_p3");
}

#[test]
fn protocol_4() {
    check_mixed("mixed_p4");
}

#[test]
fn protocol_5() {
    check_mixed("mixed_p5");
}

fn check_official(name: &str, step: i64, wrapper: bool) {
    let exp = expected(name);
    for (slot, key) in [
        (WeightsSlot::Params, "params"),
        (WeightsSlot::ParamsEma, "params_ema"),
    ] {
        let ck = load_official_checkpoint(&fixture(&format!("{name}.pkl")), slot)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ck.step, Some(step), "{name}");
        assert_eq!(ck.train_state_wrapper, wrapper, "{name}");
        let prefix = format!("{key}/");
        let want: Vec<&str> = exp.keys().filter_map(|k| k.strip_prefix(&prefix)).collect();
        assert_eq!(
            ck.params.keys().map(String::as_str).collect::<Vec<_>>(),
            want,
            "{name}"
        );
        for (path, a) in &ck.params {
            let e = &exp[&format!("{key}/{path}")];
            let w: Vec<f32> = e["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let shape: Vec<usize> = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(a.shape, shape, "{name} {key}/{path}");
            assert_eq!(
                a.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                w.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{name} {key}/{path}"
            );
        }
    }
}

#[test]
fn official_layout_float64_with_fortran_kernels() {
    check_official("official_f64", 42, false);
}

#[test]
fn official_layout_bfloat16_in_train_state() {
    check_official("official_bf16_train_state", 7, true);
}

#[test]
fn official_layout_dataclass_train_state_protocol_2() {
    check_official("official_object_train_state", 11, true);
}

#[test]
fn mixed_fixture_is_not_an_official_checkpoint() {
    let e = load_official_pkl(&fixture("mixed_p4.pkl"), WeightsSlot::Params).unwrap_err();
    assert!(e.to_string().contains("no `params`"), "{e}");
}
