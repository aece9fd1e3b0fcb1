//! The safe pickle reader on arbitrary bytes: it must return Ok or Err, never panic, overflow or exhaust memory, and
//! whatever it returns must be usable (outline, array conversions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use odelt_nodes::checkpoint::pickle::{self, Value};

fn visit(v: &Value<'_>, depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        Value::Array(a) => {
            let _ = a.to_f32_vec();
            let _ = a.to_i64_vec();
            let _ = a.numel();
        }
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
            items.iter().for_each(|c| visit(c, depth + 1))
        }
        Value::Dict(entries) => entries.iter().for_each(|(k, c)| {
            visit(k, depth + 1);
            visit(c, depth + 1)
        }),
        Value::Object(o) => {
            o.args.iter().for_each(|c| visit(c, depth + 1));
            if let Some(s) = &o.state {
                visit(s, depth + 1);
            }
        }
        other => {
            let _ = other.as_i64();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match pickle::parse(data) {
        Ok(v) => {
            let _ = v.outline(4);
            let _ = v.get("params");
            visit(&v, 0);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
