//! Unit tests of the reader, with a tiny pickle assembler.

use std::borrow::Cow;

use super::opcode::{opcode_name, OpCode};
use super::values::fortran_to_c;
use super::vm::{long_item, Item, Obj};
use super::*;

/// A tiny pickle assembler for tests.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn proto(mut self, v: u8) -> Self {
        self.0.extend([OpCode::Proto.byte(), v]);
        self
    }
    fn op(mut self, o: OpCode) -> Self {
        self.0.push(o.byte());
        self
    }
    fn s(mut self, s: &str) -> Self {
        self.0.push(OpCode::ShortBinUnicode.byte());
        self.0.push(s.len() as u8);
        self.0.extend(s.as_bytes());
        self
    }
    fn b(mut self, b: &[u8]) -> Self {
        self.0.push(OpCode::BinBytes.byte());
        self.0.extend((b.len() as u32).to_le_bytes());
        self.0.extend(b);
        self
    }
    fn i(mut self, v: i32) -> Self {
        self.0.push(OpCode::BinInt.byte());
        self.0.extend(v.to_le_bytes());
        self
    }
    fn global(mut self, m: &str, n: &str) -> Self {
        self.0.push(OpCode::Global.byte());
        self.0.extend(format!("{m}\n{n}\n").as_bytes());
        self
    }
    fn stack_global(self, m: &str, n: &str) -> Self {
        self.s(m).s(n).op(OpCode::StackGlobal)
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend(b);
        self
    }
    fn stop(self) -> Vec<u8> {
        self.op(OpCode::Stop).0
    }
}

fn f32_dtype(p: P, endian: &str) -> P {
    p.stack_global("numpy", "dtype")
        .s("f4")
        .op(OpCode::NewFalse)
        .op(OpCode::NewTrue)
        .op(OpCode::Tuple3)
        .op(OpCode::Reduce)
        .op(OpCode::Mark)
        .i(3)
        .s(endian)
        .op(OpCode::None)
        .op(OpCode::None)
        .op(OpCode::None)
        .i(-1)
        .i(-1)
        .i(0)
        .op(OpCode::Tuple)
        .op(OpCode::Build)
}

fn array(shape: &[i32], fortran: bool, endian: &str, data: &[u8]) -> Vec<u8> {
    let mut p = P::default()
        .proto(4)
        .stack_global("numpy._core.multiarray", "_reconstruct")
        .stack_global("numpy", "ndarray")
        .i(0)
        .op(OpCode::Tuple1)
        .b(b"b")
        .op(OpCode::Tuple3)
        .op(OpCode::Reduce)
        .op(OpCode::Mark)
        .i(1)
        .op(OpCode::Mark);
    for &d in shape {
        p = p.i(d);
    }
    p = p.op(OpCode::Tuple);
    p = f32_dtype(p, endian);
    p.op(if fortran {
        OpCode::NewTrue
    } else {
        OpCode::NewFalse
    })
    .b(data)
    .op(OpCode::Tuple)
    .op(OpCode::Build)
    .stop()
}

fn f32_bytes(v: &[f32], big: bool) -> Vec<u8> {
    v.iter()
        .flat_map(|x| {
            if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        })
        .collect()
}

#[test]
fn scalars_and_containers() {
    let data = P::default()
        .proto(2)
        .op(OpCode::EmptyDict)
        .op(OpCode::Memoize)
        .op(OpCode::Mark)
        .s("a")
        .i(-7)
        .s("b")
        .raw(&[OpCode::Long1.byte(), 9, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        .s("c")
        .op(OpCode::BinFloat)
        .raw(&1.5f64.to_be_bytes())
        .s("d")
        .op(OpCode::None)
        .op(OpCode::NewTrue)
        .op(OpCode::Tuple2)
        .s("e")
        .op(OpCode::EmptyList)
        .i(1)
        .op(OpCode::Append)
        .op(OpCode::Mark)
        .i(2)
        .i(3)
        .op(OpCode::Appends)
        .s("f")
        .raw(&[OpCode::Long1.byte(), 2, 0xff, 0xff])
        .op(OpCode::SetItems)
        .stop();
    let v = parse(&data).unwrap();
    assert_eq!(v.get("a"), Some(&Value::Int(-7)));
    assert!(matches!(v.get("b"), Some(Value::BigInt(b)) if b.len() == 9));
    assert_eq!(v.get("c"), Some(&Value::Float(1.5)));
    assert_eq!(
        v.get("d"),
        Some(&Value::Tuple(vec![Value::None, Value::Bool(true)]))
    );
    assert_eq!(
        v.get("e"),
        Some(&Value::List(vec![
            Value::Int(1),
            Value::Int(2),
            Value::Int(3)
        ]))
    );
    assert_eq!(v.get("f"), Some(&Value::Int(-1)));
}

#[test]
fn vm_slots_stay_small() {
    // Memory per input byte is bounded by these sizes (each opcode creates at most one object and one slot).
    assert!(std::mem::size_of::<Item<'_>>() <= 24);
    assert!(std::mem::size_of::<Obj<'_>>() <= 32);
    assert!(std::mem::size_of::<Value<'_>>() <= 32);
}

#[test]
fn long_decoding() {
    assert!(matches!(long_item(&[]), Item::Int(0)));
    assert!(matches!(long_item(&[0x80]), Item::Int(-128)));
    assert!(matches!(long_item(&[0x80, 0x00]), Item::Int(128)));
    assert!(matches!(long_item(&[0xff; 12]), Item::Int(-1)));
    let max = i64::MAX.to_le_bytes();
    assert!(matches!(long_item(&max), Item::Int(i64::MAX)));
    let mut big = u64::MAX.to_le_bytes().to_vec();
    big.push(0);
    assert!(matches!(long_item(&big), Item::BigInt(_)));
}

#[test]
fn memo_shares_mutations() {
    // d = {}; memo[0] = d; l = [d]; d['k'] = 1 (after d was put in l); result (l, memo[0]).
    let data = P::default()
        .proto(4)
        .op(OpCode::EmptyDict)
        .op(OpCode::Memoize)
        .op(OpCode::Pop)
        .op(OpCode::EmptyList)
        .raw(&[OpCode::BinGet.byte(), 0])
        .op(OpCode::Append)
        .raw(&[OpCode::BinGet.byte(), 0])
        .s("k")
        .i(1)
        .op(OpCode::SetItem)
        .op(OpCode::Tuple2)
        .stop();
    let v = parse(&data).unwrap();
    let Value::Tuple(t) = v else { panic!() };
    let Value::List(l) = &t[0] else { panic!() };
    assert_eq!(l[0].get("k"), Some(&Value::Int(1)));
    assert_eq!(t[1].get("k"), Some(&Value::Int(1)));
}

#[test]
fn f32_array_little_big_fortran() {
    let vals = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
    for (big, endian) in [(false, "<"), (true, ">")] {
        let data = array(&[2, 3], false, endian, &f32_bytes(&vals, big));
        let v = parse(&data).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.dtype.big_endian, big);
        assert_eq!(a.to_f32_vec().unwrap(), vals.to_vec());
    }
    // Column-major storage of [[0, 1, 2], [3, 4, 5]] is 0, 3, 1, 4, 2, 5.
    let f = [0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0];
    let data = array(&[2, 3], true, "<", &f32_bytes(&f, false));
    let a = parse(&data).unwrap();
    let a = a.as_array().unwrap();
    assert!(a.fortran_order);
    assert_eq!(a.to_f32_vec().unwrap(), vals.to_vec());
}

#[test]
fn fortran_to_c_3d() {
    // shape (2, 3, 4): element (i, j, k) = 100 i + 10 j + k, stored column-major.
    let shape = [2usize, 3, 4];
    let mut f = vec![0i64; 24];
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                f[i + 2 * (j + 3 * k)] = (100 * i + 10 * j + k) as i64;
            }
        }
    }
    let c = fortran_to_c(&f, &shape);
    let expected: Vec<i64> = (0..2)
        .flat_map(|i| (0..3).flat_map(move |j| (0..4).map(move |k| (100 * i + 10 * j + k) as i64)))
        .collect();
    assert_eq!(c, expected);
}

#[test]
fn array_size_mismatch_is_an_error() {
    let data = array(&[2, 3], false, "<", &[0u8; 20]);
    let e = parse(&data).unwrap_err();
    assert!(matches!(e.kind, PickleErrorKind::Numpy(_)), "{e}");
    assert_eq!(e.opcode, "BUILD");
    assert!(e.to_string().contains("needs 24 bytes"), "{e}");
}

#[test]
fn overflowing_shape_is_an_error() {
    let data = array(&[i32::MAX, i32::MAX, i32::MAX], false, "<", &[0u8; 4]);
    assert!(parse(&data).is_err());
}

#[test]
fn dangerous_globals_are_refused_by_name() {
    for (m, n) in [
        ("os", "system"),
        ("posix", "system"),
        ("nt", "system"),
        ("subprocess", "Popen"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("__builtin__", "open"),
        ("importlib.machinery", "SourceFileLoader"),
        ("sys", "modules"),
        ("numpy", "__builtins__"),
        ("collections", "OrderedDict.__init__"),
        ("operator", "attrgetter"),
    ] {
        for stack in [false, true] {
            let p = P::default().proto(4);
            let p = if stack {
                p.stack_global(m, n)
            } else {
                p.global(m, n)
            };
            let data = p
                .s("echo pwned")
                .op(OpCode::Tuple1)
                .op(OpCode::Reduce)
                .stop();
            let e = parse(&data).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e.kind, PickleErrorKind::ForbiddenGlobal { .. }),
                "{m}.{n}: {msg}"
            );
            assert!(msg.contains(&format!("{m}.{n}")), "{msg}");
            assert!(msg.contains("refusing to load"), "{msg}");
        }
    }
}

#[test]
fn unknown_function_refused_unknown_class_stubbed() {
    let data = P::default()
        .proto(4)
        .stack_global("somepkg.util", "do_things")
        .op(OpCode::EmptyTuple)
        .op(OpCode::Reduce)
        .stop();
    let e = parse(&data).unwrap_err();
    assert!(
        matches!(e.kind, PickleErrorKind::UnknownFunction { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("somepkg.util.do_things"));

    let data = P::default()
        .proto(4)
        .stack_global("optax._src.base", "EmptyState")
        .op(OpCode::EmptyTuple)
        .op(OpCode::NewObj)
        .stack_global("optax._src.transform", "ScaleByAdamState")
        .i(5)
        .op(OpCode::Tuple1)
        .op(OpCode::Reduce)
        .op(OpCode::EmptyDict)
        .s("x")
        .i(1)
        .op(OpCode::SetItem)
        .op(OpCode::Build)
        .op(OpCode::Tuple2)
        .stop();
    let v = parse(&data).unwrap();
    let Value::Tuple(t) = v else { panic!() };
    let Value::Object(o) = &t[0] else { panic!() };
    assert_eq!(
        (o.module.as_str(), o.name.as_str()),
        ("optax._src.base", "EmptyState")
    );
    let Value::Object(o) = &t[1] else { panic!() };
    assert_eq!(o.name, "ScaleByAdamState");
    assert_eq!(o.args, vec![Value::Int(5)]);
    assert_eq!(
        o.state.as_ref().and_then(|s| s.get("x")),
        Some(&Value::Int(1))
    );
}

#[test]
fn protocol2_bytes_via_codecs_and_ordered_dict() {
    let data = P::default()
        .proto(2)
        .global("collections", "OrderedDict")
        .op(OpCode::EmptyTuple)
        .op(OpCode::Reduce)
        .s("k")
        .global("_codecs", "encode")
        .s("a\u{ff}")
        .s("latin1")
        .op(OpCode::Tuple2)
        .op(OpCode::Reduce)
        .op(OpCode::SetItem)
        .stop();
    let v = parse(&data).unwrap();
    assert_eq!(
        v.get("k"),
        Some(&Value::Bytes(Cow::Owned(vec![b'a', 0xff])))
    );
}

#[test]
fn reference_cycle_is_bounded() {
    // l = []; l.append(l)
    let data = P::default()
        .proto(4)
        .op(OpCode::EmptyList)
        .op(OpCode::Memoize)
        .raw(&[OpCode::BinGet.byte(), 0])
        .op(OpCode::Append)
        .stop();
    let e = parse(&data).unwrap_err();
    assert!(matches!(e.kind, PickleErrorKind::Limit { .. }), "{e}");
}

#[test]
fn billion_laughs_is_bounded() {
    // t0 = (1,); t_{k+1} = (t_k, t_k) via the memo, 60 levels: 2^60 leaves if expanded.
    let mut p = P::default()
        .proto(4)
        .i(1)
        .op(OpCode::Tuple1)
        .op(OpCode::Memoize);
    for k in 0..60u8 {
        p = p
            .raw(&[OpCode::BinGet.byte(), k, OpCode::BinGet.byte(), k])
            .op(OpCode::Tuple2)
            .op(OpCode::Memoize);
    }
    let data = p.stop();
    let e = parse(&data).unwrap_err();
    assert!(matches!(e.kind, PickleErrorKind::Limit { .. }), "{e}");
}

#[test]
fn pops_never_cross_a_mark() {
    let data = P::default()
        .proto(4)
        .i(1)
        .op(OpCode::Mark)
        .op(OpCode::Tuple1)
        .stop();
    let e = parse(&data).unwrap_err();
    assert_eq!(e.kind, PickleErrorKind::StackUnderflow);
    assert_eq!(e.opcode, "TUPLE1");
}

#[test]
fn truncation_and_declared_lengths() {
    let e = parse(&[OpCode::Proto.byte(), 4, OpCode::None.byte()]).unwrap_err();
    assert_eq!(e.kind, PickleErrorKind::NoStop);
    let mut data = vec![OpCode::Proto.byte(), 4, OpCode::BinBytes8.byte()];
    data.extend(u64::MAX.to_le_bytes());
    data.push(OpCode::Stop.byte());
    let e = parse(&data).unwrap_err();
    assert!(matches!(e.kind, PickleErrorKind::Truncated { .. }), "{e}");
    assert_eq!(e.offset, 2);
    let mut data = vec![OpCode::Proto.byte(), 4, OpCode::Frame.byte()];
    data.extend((1u64 << 40).to_le_bytes());
    assert!(matches!(
        parse(&data).unwrap_err().kind,
        PickleErrorKind::Truncated { .. }
    ));
}

#[test]
fn numpy_scalar_and_frombuffer() {
    let data = f32_dtype(
        P::default()
            .proto(4)
            .stack_global("numpy._core.multiarray", "scalar"),
        "<",
    )
    .b(&2.5f32.to_le_bytes())
    .op(OpCode::Tuple2)
    .op(OpCode::Reduce)
    .stop();
    let v = parse(&data).unwrap();
    let a = v.as_array().unwrap();
    assert!(a.numpy_scalar && a.shape.is_empty());
    assert_eq!(a.to_f32_vec().unwrap(), vec![2.5]);

    let p = P::default()
        .proto(5)
        .stack_global("numpy._core.numeric", "_frombuffer")
        .op(OpCode::Mark)
        .raw(&[OpCode::ByteArray8.byte()])
        .raw(&8u64.to_le_bytes())
        .raw(&f32_bytes(&[1.0, 2.0], false));
    let data = f32_dtype(p, "<")
        .i(2)
        .op(OpCode::Tuple1)
        .s("C")
        .op(OpCode::Tuple)
        .op(OpCode::Reduce)
        .stop();
    let v = parse(&data).unwrap();
    assert_eq!(v.as_array().unwrap().to_f32_vec().unwrap(), vec![1.0, 2.0]);
}

#[test]
fn dtype_codes() {
    assert_eq!(ElemType::parse_numpy("<f4"), Some((ElemType::F32, false)));
    assert_eq!(ElemType::parse_numpy(">f8"), Some((ElemType::F64, true)));
    assert_eq!(ElemType::parse_numpy("b1"), Some((ElemType::Bool, false)));
    assert_eq!(ElemType::parse_numpy("u1"), Some((ElemType::U8, false)));
    assert_eq!(ElemType::parse_numpy("O"), None);
    assert_eq!(ElemType::parse_numpy(""), None);
    assert_eq!(ElemType::parse_numpy(">"), None);
}

#[test]
fn non_float_array_refused_for_f32() {
    let a = NdArray {
        dtype: NpDtype {
            elem: ElemType::I32,
            big_endian: false,
        },
        shape: vec![1],
        fortran_order: false,
        numpy_scalar: false,
        data: Cow::Owned(vec![1, 0, 0, 0]),
    };
    assert!(matches!(a.to_f32_vec(), Err(ArrayError::WrongType { .. })));
    assert_eq!(a.to_i64_vec().unwrap(), vec![1]);
    let bad = NdArray {
        data: Cow::Owned(vec![1, 0, 0]),
        ..a
    };
    assert!(matches!(
        bad.to_i64_vec(),
        Err(ArrayError::SizeMismatch { .. })
    ));
}

#[test]
fn opcode_bytes_round_trip_and_names_are_unique() {
    let mut names = std::collections::HashSet::new();
    let mut count = 0;
    for b in 0..=u8::MAX {
        if let Some(op) = OpCode::from_byte(b) {
            assert_eq!(op.byte(), b);
            assert!(names.insert(op.name()), "{} twice", op.name());
            assert_eq!(opcode_name(b), op.name());
            count += 1;
        } else {
            assert_eq!(opcode_name(b), "unknown");
        }
    }
    assert_eq!(count, 68);
    assert_eq!(OpCode::from_byte(0x93), Some(OpCode::StackGlobal));
    assert_eq!(OpCode::StackGlobal.name(), "STACK_GLOBAL");
    assert_eq!(OpCode::from_byte(0xff), None);
}
