//! Literal inputs checked against their declared spec and converted to contract values (ComfyUI's conversions
//! and range checks, with its error objects).

use abi_stable::std_types::RString;
use odelt_contract::{types, InputSpec, InputType, Value};
use serde_json::{json, Value as Json};

use super::{err, spec_json};
use crate::prompt::json_kind;

/// Checks and converts a literal for `spec`; the error is a ComfyUI error object.
pub fn check_literal(name: &str, spec: &InputSpec, v: &Json) -> Result<(Value, Json), Json> {
    let extra = |more: Json| {
        let mut e =
            json!({"input_name": name, "input_config": spec_json(spec), "received_value": v});
        if let (Some(o), Json::Object(m)) = (e.as_object_mut(), more) {
            o.extend(m);
        }
        e
    };
    match &spec.ty {
        InputType::Combo(choices) => match v {
            Json::String(s) if choices.contains(s) => {
                Ok((Value::Str(RString::from(s.as_str())), v.clone()))
            }
            _ => {
                let shown = if choices.len() > 20 {
                    format!("(list of length {})", choices.len())
                } else {
                    format!("{choices:?}")
                };
                Err(err(
                    "value_not_in_list",
                    "Value not in list",
                    format!("{name}: {v} not in {shown}"),
                    extra(json!({})),
                ))
            }
        },
        InputType::Named(t) => {
            let union: Vec<&str> = t.split(',').map(str::trim).collect();
            if union.contains(&types::ANY) {
                return Ok((Value::Json(RString::from(v.to_string())), v.clone()));
            }
            let widget: Vec<&str> = union
                .iter()
                .copied()
                .filter(|u| {
                    [
                        types::INT,
                        types::FLOAT,
                        types::STRING,
                        types::BOOLEAN,
                        types::COMBO,
                    ]
                    .contains(u)
                })
                .collect();
            if widget.is_empty() {
                return Err(err(
                    "invalid_input_type",
                    format!("Input '{name}' of type {t} must be linked to a node output"),
                    format!("{name}, {v}"),
                    extra(json!({})),
                ));
            }
            let mut last_err = None;
            for w in widget {
                match convert(name, w, spec, v) {
                    Ok(r) => return Ok(r),
                    Err(Some(range_err)) => return Err(extra_merge(range_err, extra(json!({})))),
                    Err(None) => last_err = Some(w),
                }
            }
            let w = last_err.unwrap_or(t);
            Err(err(
                "invalid_input_type",
                format!("Failed to convert an input value to a {w} value"),
                format!("{name}, {v}, got {}", json_kind(v)),
                extra(json!({})),
            ))
        }
    }
}

fn extra_merge(mut e: Json, extra: Json) -> Json {
    e["extra_info"] = extra;
    e
}

/// Converts `v` to widget type `w`. `Err(None)`: wrong type; `Err(Some(e))`: out of range.
fn convert(name: &str, w: &str, spec: &InputSpec, v: &Json) -> Result<(Value, Json), Option<Json>> {
    match w {
        types::INT => {
            let n = as_int(v).ok_or(None)?;
            let min = spec.options.min.as_ref().and_then(bound);
            let max = spec.options.max.as_ref().and_then(bound);
            if let Some(m) = min {
                if below(n, m) {
                    return Err(Some(err(
                        "value_smaller_than_min",
                        format!("Value {n} smaller than min of {}", show(m)),
                        name,
                        json!({}),
                    )));
                }
            }
            // Without a declared max, INT is i64; a declared max may allow up to u64::MAX.
            let max = max.unwrap_or(Bound::Int(i64::MAX as i128));
            if above(n, max) {
                return Err(Some(err(
                    "value_bigger_than_max",
                    format!("Value {n} bigger than max of {}", show(max)),
                    name,
                    json!({}),
                )));
            }
            if n < i64::MIN as i128 {
                return Err(Some(err(
                    "value_smaller_than_min",
                    format!("Value {n} smaller than min of {}", i64::MIN),
                    name,
                    json!({}),
                )));
            }
            if n > u64::MAX as i128 {
                return Err(Some(err(
                    "value_bigger_than_max",
                    format!("Value {n} bigger than max of {}", u64::MAX),
                    name,
                    json!({}),
                )));
            }
            let (value, canon) = if n > i64::MAX as i128 {
                (Value::Int(n as u64 as i64), json!(n as u64))
            } else {
                (Value::Int(n as i64), json!(n as i64))
            };
            Ok((value, canon))
        }
        types::FLOAT => {
            let f = v.as_f64().ok_or(None)?;
            if let Some(m) = spec.options.min.as_ref().and_then(Json::as_f64) {
                if f < m {
                    return Err(Some(err(
                        "value_smaller_than_min",
                        format!("Value {f} smaller than min of {m}"),
                        name,
                        json!({}),
                    )));
                }
            }
            if let Some(m) = spec.options.max.as_ref().and_then(Json::as_f64) {
                if f > m {
                    return Err(Some(err(
                        "value_bigger_than_max",
                        format!("Value {f} bigger than max of {m}"),
                        name,
                        json!({}),
                    )));
                }
            }
            Ok((Value::Float(f), json!(f)))
        }
        types::STRING | types::COMBO => match v {
            Json::String(s) => Ok((Value::Str(RString::from(s.as_str())), v.clone())),
            _ => Err(None),
        },
        types::BOOLEAN => match v {
            Json::Bool(b) => Ok((Value::Bool(*b), v.clone())),
            _ => Err(None),
        },
        _ => Err(None),
    }
}

#[derive(Clone, Copy, Debug)]
enum Bound {
    Int(i128),
    Float(f64),
}

fn bound(v: &Json) -> Option<Bound> {
    if let Some(i) = v.as_i64() {
        Some(Bound::Int(i as i128))
    } else if let Some(u) = v.as_u64() {
        Some(Bound::Int(u as i128))
    } else {
        v.as_f64().map(Bound::Float)
    }
}

fn below(n: i128, b: Bound) -> bool {
    match b {
        Bound::Int(m) => n < m,
        Bound::Float(m) => (n as f64) < m,
    }
}

fn above(n: i128, b: Bound) -> bool {
    match b {
        Bound::Int(m) => n > m,
        Bound::Float(m) => (n as f64) > m,
    }
}

fn show(b: Bound) -> String {
    match b {
        Bound::Int(i) => i.to_string(),
        Bound::Float(f) => f.to_string(),
    }
}

/// An integer from a JSON number: integers, or floats with no fractional part.
fn as_int(v: &Json) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i as i128);
    }
    if let Some(u) = v.as_u64() {
        return Some(u as i128);
    }
    let f = v.as_f64()?;
    if f.fract() == 0.0 && f.abs() < 1.0e30 {
        Some(f as i128)
    } else {
        None
    }
}
