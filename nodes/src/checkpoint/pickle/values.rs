//! The public value types: the [`Value`] tree and the numpy arrays, dtypes, globals and object stubs in it.

use std::borrow::Cow;
use std::fmt;

/// Element types of numpy arrays the reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemType {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    /// `ml_dtypes.bfloat16` (what JAX uses).
    BF16,
    F32,
    F64,
}

impl ElemType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElemType::Bool | ElemType::U8 | ElemType::I8 => 1,
            ElemType::U16 | ElemType::I16 | ElemType::F16 | ElemType::BF16 => 2,
            ElemType::U32 | ElemType::I32 | ElemType::F32 => 4,
            ElemType::U64 | ElemType::I64 | ElemType::F64 => 8,
        }
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            ElemType::F16 | ElemType::BF16 | ElemType::F32 | ElemType::F64
        )
    }

    /// The numpy name (`float32`, `bfloat16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ElemType::Bool => "bool",
            ElemType::U8 => "uint8",
            ElemType::I8 => "int8",
            ElemType::U16 => "uint16",
            ElemType::I16 => "int16",
            ElemType::U32 => "uint32",
            ElemType::I32 => "int32",
            ElemType::U64 => "uint64",
            ElemType::I64 => "int64",
            ElemType::F16 => "float16",
            ElemType::BF16 => "bfloat16",
            ElemType::F32 => "float32",
            ElemType::F64 => "float64",
        }
    }

    /// Parses a numpy type code or name (`f4`, `<f4`, `float32`, `b1`, `?`, ...). Returns the type and whether the
    /// code itself asked for big-endian storage.
    pub fn parse_numpy(code: &str) -> Option<(ElemType, bool)> {
        let (big, rest) = match code.as_bytes().first() {
            Some(b'>') | Some(b'!') => (true, code.get(1..)?),
            Some(b'<') | Some(b'=') | Some(b'|') => (false, code.get(1..)?),
            _ => (false, code),
        };
        let t = match rest {
            "b1" | "?" | "bool" | "bool_" => ElemType::Bool,
            "u1" | "B" | "uint8" => ElemType::U8,
            "i1" | "b" | "int8" => ElemType::I8,
            "u2" | "H" | "uint16" => ElemType::U16,
            "i2" | "h" | "int16" => ElemType::I16,
            "u4" | "I" | "uint32" => ElemType::U32,
            "i4" | "i" | "int32" => ElemType::I32,
            "u8" | "Q" | "uint64" => ElemType::U64,
            "i8" | "q" | "int64" => ElemType::I64,
            "f2" | "e" | "float16" | "half" => ElemType::F16,
            "f4" | "f" | "float32" | "single" => ElemType::F32,
            "f8" | "d" | "float64" | "double" => ElemType::F64,
            "bfloat16" => ElemType::BF16,
            _ => return None,
        };
        Some((t, big))
    }
}

/// A numpy dtype: element type and byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NpDtype {
    pub elem: ElemType,
    /// Stored big-endian (`>`); otherwise little-endian (or byte order does not apply).
    pub big_endian: bool,
}

impl fmt::Display for NpDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = if self.elem.size() == 1 {
            ""
        } else if self.big_endian {
            ">"
        } else {
            "<"
        };
        write!(f, "{order}{}", self.elem.name())
    }
}

/// Errors converting an [`NdArray`]'s bytes into numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArrayError {
    /// The data does not hold exactly `numel * itemsize` bytes.
    #[error("array of shape {shape:?} and dtype {dtype} needs {expected} bytes but holds {found}")]
    SizeMismatch {
        shape: Vec<usize>,
        dtype: NpDtype,
        expected: String,
        found: usize,
    },
    /// The element type is not what the conversion accepts.
    #[error("array has dtype {found}, expected {expected}")]
    WrongType {
        found: NpDtype,
        expected: &'static str,
    },
}

/// A numpy array (or numpy scalar, `shape == []`), data borrowed from the pickle when possible.
#[derive(Clone, PartialEq)]
pub struct NdArray<'a> {
    pub dtype: NpDtype,
    pub shape: Vec<usize>,
    /// The data is in Fortran (column-major) order; the conversions below return C (row-major) order.
    pub fortran_order: bool,
    /// The value was a numpy scalar (`numpy.float32(1.0)`), not a 0-d array.
    pub numpy_scalar: bool,
    /// Raw element bytes in storage order and byte order.
    pub data: Cow<'a, [u8]>,
}

impl fmt::Debug for NdArray<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdArray")
            .field("dtype", &format_args!("{}", self.dtype))
            .field("shape", &self.shape)
            .field("fortran_order", &self.fortran_order)
            .field("numpy_scalar", &self.numpy_scalar)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Number of elements of `shape`, `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl NdArray<'_> {
    /// Number of elements (saturating; the array was checked against its data when it was read).
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }

    fn check_len(&self) -> Result<usize, ArrayError> {
        let numel = checked_numel(&self.shape);
        let expected = numel.and_then(|n| n.checked_mul(self.dtype.elem.size()));
        match (numel, expected) {
            (Some(n), Some(bytes)) if bytes == self.data.len() => Ok(n),
            _ => Err(ArrayError::SizeMismatch {
                shape: self.shape.clone(),
                dtype: self.dtype,
                expected: expected
                    .map_or_else(|| "more than usize::MAX".to_string(), |b| b.to_string()),
                found: self.data.len(),
            }),
        }
    }

    fn decode<T, const N: usize>(&self, f: impl Fn([u8; N]) -> T) -> Vec<T> {
        let big = self.dtype.big_endian;
        self.data
            .chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                if big {
                    b.reverse();
                }
                f(b)
            })
            .collect()
    }

    fn to_c_order<T: Copy>(&self, v: Vec<T>) -> Vec<T> {
        if self.fortran_order && self.shape.iter().filter(|&&d| d > 1).count() > 1 {
            fortran_to_c(&v, &self.shape)
        } else {
            v
        }
    }

    /// The elements as `f32` in C order, converted from any float dtype (f16, bf16, f32, f64). Non-float dtypes
    /// are refused.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, ArrayError> {
        self.check_len()?;
        let v = match self.dtype.elem {
            ElemType::F32 => self.decode(f32::from_le_bytes),
            ElemType::F64 => self.decode(|b| f64::from_le_bytes(b) as f32),
            ElemType::F16 => self.decode(|b| half::f16::from_le_bytes(b).to_f32()),
            ElemType::BF16 => self.decode(|b| half::bf16::from_le_bytes(b).to_f32()),
            _ => {
                return Err(ArrayError::WrongType {
                    found: self.dtype,
                    expected: "a float type (float16, bfloat16, float32, float64)",
                })
            }
        };
        Ok(self.to_c_order(v))
    }

    /// The elements as `i64` in C order, from bool or integer dtypes (u64 values above `i64::MAX` wrap).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, ArrayError> {
        self.check_len()?;
        let v = match self.dtype.elem {
            ElemType::Bool | ElemType::U8 => self.decode(|b: [u8; 1]| i64::from(b[0])),
            ElemType::I8 => self.decode(|b| i64::from(i8::from_le_bytes(b))),
            ElemType::U16 => self.decode(|b| i64::from(u16::from_le_bytes(b))),
            ElemType::I16 => self.decode(|b| i64::from(i16::from_le_bytes(b))),
            ElemType::U32 => self.decode(|b| i64::from(u32::from_le_bytes(b))),
            ElemType::I32 => self.decode(|b| i64::from(i32::from_le_bytes(b))),
            ElemType::U64 => self.decode(|b| u64::from_le_bytes(b) as i64),
            ElemType::I64 => self.decode(i64::from_le_bytes),
            _ => {
                return Err(ArrayError::WrongType {
                    found: self.dtype,
                    expected: "a bool or integer type",
                })
            }
        };
        Ok(self.to_c_order(v))
    }
}

/// Reorders column-major data of `shape` into row-major order. `v.len()` must equal the number of elements.
pub(super) fn fortran_to_c<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
    let n = v.len();
    let nd = shape.len();
    // Column-major strides.
    let mut fstride = vec![1usize; nd];
    for k in 1..nd {
        fstride[k] = fstride[k - 1].saturating_mul(shape[k - 1]);
    }
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; nd];
    let mut off = 0usize;
    for _ in 0..n {
        match v.get(off) {
            Some(&x) => out.push(x),
            None => break,
        }
        // Advance the row-major odometer (last axis fastest) and the column-major offset with it.
        let mut k = nd;
        while k > 0 {
            k -= 1;
            idx[k] += 1;
            off = off.wrapping_add(fstride[k]);
            if idx[k] < shape[k] {
                break;
            }
            off = off.wrapping_sub(fstride[k].wrapping_mul(shape[k]));
            idx[k] = 0;
        }
    }
    out
}

/// A reference to a Python global (`module.name`) that was never called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalRef {
    pub module: String,
    pub name: String,
}

impl fmt::Display for GlobalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// An inert stand-in for an instance of a class the reader does not know (an optax state, a namedtuple, a dataclass).
#[derive(Debug, Clone, PartialEq)]
pub struct PyObject<'a> {
    pub module: String,
    pub name: String,
    /// Positional arguments of the constructor call (`REDUCE`/`NEWOBJ`).
    pub args: Vec<Value<'a>>,
    /// Keyword arguments (`NEWOBJ_EX`).
    pub kwargs: Vec<(Value<'a>, Value<'a>)>,
    /// The `BUILD` state, if any (the instance `__dict__` of a dataclass, for example).
    pub state: Option<Value<'a>>,
}

/// A pickled value, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit `i64`: little-endian two's complement bytes, as pickled.
    BigInt(Cow<'a, [u8]>),
    Float(f64),
    Str(Cow<'a, str>),
    /// `bytes` or `bytearray`.
    Bytes(Cow<'a, [u8]>),
    List(Vec<Value<'a>>),
    Tuple(Vec<Value<'a>>),
    /// `set` or `frozenset`.
    Set(Vec<Value<'a>>),
    /// A dict (also `OrderedDict`, `defaultdict`, `FrozenDict`) in insertion order. Keys are kept as pickled; if a key
    /// repeats, Python would keep the last value.
    Dict(Vec<(Value<'a>, Value<'a>)>),
    /// A numpy array or numpy scalar.
    Array(Box<NdArray<'a>>),
    /// A numpy dtype object.
    Dtype(NpDtype),
    /// A global that was referenced but not called.
    Global(Box<GlobalRef>),
    /// An inert stub of an unknown class's instance.
    Object(Box<PyObject<'a>>),
}

impl<'a> Value<'a> {
    /// A short name of the value's type for messages (`dict`, `ndarray`, `object optax...ScaleByAdamState`...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Set(_) => "set",
            Value::Dict(_) => "dict",
            Value::Array(_) => "ndarray",
            Value::Dtype(_) => "dtype",
            Value::Global(_) => "global",
            Value::Object(_) => "object",
        }
    }

    /// The entries of a dict.
    pub fn as_dict(&self) -> Option<&[(Value<'a>, Value<'a>)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The value stored under string key `key` in a dict (the last one, as Python would keep).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.as_dict()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The string, if this is a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer value of an int, a bool, or a one-element integer numpy array/scalar.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Array(a) if a.numel() == 1 => a.to_i64_vec().ok()?.first().copied(),
            _ => None,
        }
    }

    /// The array, if this is a numpy array or scalar.
    pub fn as_array(&self) -> Option<&NdArray<'a>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A one-line-per-node outline of the tree (no data), down to `max_depth` levels, for inspection tools.
    pub fn outline(&self, max_depth: usize) -> String {
        let mut out = String::new();
        outline_into(self, 0, max_depth, &mut out);
        out
    }
}

fn short(v: &Value<'_>) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => format!("int ({} bytes)", b.len()),
        Value::Float(x) => format!("{x}"),
        Value::Str(s) => {
            let mut t: String = s.chars().take(60).collect();
            if t.len() < s.len() {
                t.push('…');
            }
            format!("{t:?}")
        }
        Value::Bytes(b) => format!("bytes ({} bytes)", b.len()),
        Value::List(v) => format!("list ({} items)", v.len()),
        Value::Tuple(v) => format!("tuple ({} items)", v.len()),
        Value::Set(v) => format!("set ({} items)", v.len()),
        Value::Dict(v) => format!("dict ({} entries)", v.len()),
        Value::Array(a) => format!(
            "{} {} {:?}{}",
            if a.numpy_scalar {
                "numpy scalar"
            } else {
                "ndarray"
            },
            a.dtype,
            a.shape,
            if a.fortran_order {
                " (fortran order)"
            } else {
                ""
            }
        ),
        Value::Dtype(d) => format!("dtype {d}"),
        Value::Global(g) => format!("global {g}"),
        Value::Object(o) => format!("object {}.{} (stub)", o.module, o.name),
    }
}

fn outline_into(v: &Value<'_>, depth: usize, max_depth: usize, out: &mut String) {
    let line = short(v);
    out.push_str(&line);
    out.push('\n');
    if depth >= max_depth {
        return;
    }
    let pad = "  ".repeat(depth + 1);
    let mut child = |label: String, c: &Value<'_>| {
        out.push_str(&pad);
        out.push_str(&label);
        out.push_str(": ");
        outline_into(c, depth + 1, max_depth, out);
    };
    match v {
        Value::Dict(d) => {
            for (k, c) in d {
                let label = match k {
                    Value::Str(s) => s.to_string(),
                    other => short(other),
                };
                child(label, c);
            }
        }
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
            for (i, c) in items.iter().enumerate() {
                child(format!("[{i}]"), c);
            }
        }
        Value::Object(o) => {
            for (i, c) in o.args.iter().enumerate() {
                child(format!("arg{i}"), c);
            }
            for (k, c) in &o.kwargs {
                child(format!("kw {}", short(k)), c);
            }
            if let Some(s) = &o.state {
                child("state".into(), s);
            }
        }
        _ => {}
    }
}
