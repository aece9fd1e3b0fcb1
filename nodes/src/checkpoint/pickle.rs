//! A safe reader for Python pickles (protocols 2–5) that holds nothing but data.
//!
//! The official ODE_t(ODE_l) checkpoints are `pickle.dumps` of nested dicts of numpy arrays plus optax state objects.
//! A real unpickler executes whatever callables the file names; this one never executes anything. It runs the pickle
//! virtual machine over the bytes and builds a [`Value`] tree of plain data: `None`, bools, ints (and big ints), floats,
//! strings, bytes, lists, tuples, dicts, sets, numpy arrays and numpy scalars ([`NdArray`]), numpy dtypes, and inert
//! stubs of classes it does not know ([`PyObject`]).
//!
//! # Policy for globals (`GLOBAL`, `STACK_GLOBAL`) and calls (`REDUCE`, `NEWOBJ`, `NEWOBJ_EX`, `BUILD`)
//!
//! Every global is classified the moment the pickle names it:
//!
//! 1. **Understood** (an allow-list): `numpy.core.multiarray._reconstruct` / `numpy._core.multiarray._reconstruct`,
//!    `numpy.ndarray`, `numpy.dtype`, `numpy.[_]core.multiarray.scalar`, `numpy.[_]core.numeric._frombuffer`
//!    (protocol 5), `ml_dtypes.bfloat16`, `collections.OrderedDict` and `collections.defaultdict` (read as plain
//!    dicts), `flax.core.frozen_dict.FrozenDict` (a dict), `_codecs.encode` (how protocol 2 spells bytes),
//!    `copyreg._reconstructor` (an inert stub), and the inert builtins `set`, `frozenset`, `list`, `dict`, `tuple`,
//!    `bytes`, `bytearray`, `object`, `int`, `float`, `str`, `bool`. Applying them builds the value Python would
//!    build, with every argument checked.
//! 2. **Refused**: any name in a module that can reach the operating system, the interpreter or code loading
//!    (`os`, `posix`, `nt`, `subprocess`, `sys`, `importlib`, `shutil`, `socket`, `pty`, `runpy`, `webbrowser`,
//!    `pickle`, `marshal`, `types`, `code`, `ctypes`, `operator`, `functools`, `multiprocessing`, … see
//!    [`DENIED_MODULES`]), every builtin outside the inert list above (`eval`, `exec`, `compile`, `open`, `getattr`,
//!    `__import__`, …), and every name with a dunder component (`x.__globals__`). The error names the global:
//!    `pickle imports os.system, which a checkpoint never needs; refusing to load`. Nothing is looked up or run.
//! 3. **Unknown** (anything else, e.g. `optax._src.transform.ScaleByAdamState`): kept as an inert reference.
//!    `NEWOBJ` / `NEWOBJ_EX` of it (how namedtuples and dataclasses pickle) and `REDUCE` of a *class-like* name (last
//!    component starts with an upper-case letter, like `EmptyState`) build a [`PyObject`] stub holding the class
//!    name, the arguments and any `BUILD` state — nothing is constructed. `REDUCE` of an unknown *function-like* name
//!    (`foo.bar`) is refused: a checkpoint never needs to call a function this reader does not understand.
//!
//! Persistent ids (`PERSID`, `BINPERSID`, used by torch), out-of-band buffers (`NEXT_BUFFER`), the extension registry
//! (`EXT1/2/4`) and the protocol-0/1 instance opcodes (`INST`, `OBJ`) are refused with an error.
//!
//! # Resource limits
//!
//! Hostile input cannot make the reader allocate without bound or panic:
//! - a declared length (strings, bytes, frames, big ints) larger than the bytes that remain is an error, checked
//!   before anything is allocated; byte and string payloads, array data included, are borrowed from the input and
//!   never copied;
//! - the value stack, the MARK depth, the memo, the number of objects, nesting depth and the size of the final tree
//!   are capped ([`Limits`]); each opcode creates at most one small (≤ 32-byte) object and one 24-byte slot, so the
//!   reader's own memory is a small multiple of the input length; bytes it must create itself (`_codecs.encode`),
//!   container copies made by calls and shared sub-trees expanded into the final [`Value`] are capped by the input
//!   length too (a "billion laughs" pickle is an error, not an out-of-memory);
//! - every index and length read from the file is checked; there is no unchecked indexing, `unwrap` or `expect`
//!   on input-derived data.
//!
//! Errors ([`PickleError`]) carry the byte offset and the name of the opcode being executed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Modules (and their sub-modules) whose globals are refused outright.
pub const DENIED_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "subprocess",
    "_posixsubprocess",
    "sys",
    "importlib",
    "imp",
    "zipimport",
    "pkgutil",
    "site",
    "sysconfig",
    "shutil",
    "socket",
    "ssl",
    "select",
    "selectors",
    "pty",
    "tty",
    "fcntl",
    "resource",
    "signal",
    "mmap",
    "runpy",
    "webbrowser",
    "pickle",
    "_pickle",
    "pickletools",
    "copy",
    "marshal",
    "types",
    "code",
    "codeop",
    "compileall",
    "py_compile",
    "ctypes",
    "_ctypes",
    "cffi",
    "multiprocessing",
    "concurrent",
    "threading",
    "_thread",
    "asyncio",
    "tempfile",
    "io",
    "_io",
    "pathlib",
    "glob",
    "fileinput",
    "platform",
    "operator",
    "_operator",
    "functools",
    "_functools",
    "itertools",
    "inspect",
    "pdb",
    "bdb",
    "trace",
    "timeit",
    "profile",
    "cProfile",
    "gc",
    "weakref",
    "urllib",
    "http",
    "ftplib",
    "smtplib",
    "telnetlib",
    "xmlrpc",
    "zipfile",
    "tarfile",
    "commands",
    "popen2",
    "dill",
    "cloudpickle",
    "joblib",
    "torch",
    "numpy.testing",
    "numpy.distutils",
    "numpy.f2py",
    "numpy.ctypeslib",
    "numpy.lib.npyio",
];

/// Builtins that are inert type objects; every other builtin is refused.
const INERT_BUILTINS: &[&str] = &[
    "set",
    "frozenset",
    "list",
    "dict",
    "tuple",
    "bytes",
    "bytearray",
    "object",
    "int",
    "float",
    "str",
    "bool",
];

// ---------------------------------------------------------------------------------------------------------------
// Public values
// ---------------------------------------------------------------------------------------------------------------

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
fn fortran_to_c<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
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

// ---------------------------------------------------------------------------------------------------------------
// Errors and limits
// ---------------------------------------------------------------------------------------------------------------

/// What went wrong (see [`PickleError`] for where).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleErrorKind {
    #[error("needs {needed} bytes but only {available} remain (file truncated or corrupt)")]
    Truncated { needed: u64, available: usize },
    #[error("input ended without a STOP opcode (file truncated?)")]
    NoStop,
    #[error("unknown opcode byte 0x{0:02x} (not a pickle, or corrupt)")]
    UnknownOpcode(u8),
    #[error("pickle protocol {0} is not supported (0..=5 are)")]
    UnsupportedProtocol(u8),
    #[error("{0}")]
    Unsupported(String),
    #[error("stack underflow (malformed pickle)")]
    StackUnderflow,
    #[error("no MARK on the stack (malformed pickle)")]
    NoMark,
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("memo entry {0} was never stored")]
    MemoMissing(u64),
    #[error("{what} exceeds the limit of {limit}")]
    Limit { what: &'static str, limit: usize },
    #[error("pickle imports {module}.{name}, which a checkpoint never needs; refusing to load")]
    ForbiddenGlobal { module: String, name: String },
    #[error(
        "pickle calls {module}.{name}, a function this reader does not know (it builds only numpy arrays, plain \
         containers and inert stubs of classes); refusing to load"
    )]
    UnknownFunction { module: String, name: String },
    #[error("bad call of {callable}: {detail}")]
    BadCall { callable: String, detail: String },
    #[error("invalid numpy data: {0}")]
    Numpy(String),
    #[error("invalid UTF-8 in a string")]
    InvalidUtf8,
    #[error("invalid text argument: {0}")]
    BadText(String),
}

/// A pickle could not be read: what, where (byte offset of the opcode) and which opcode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pickle error at byte {offset} (opcode {opcode}): {kind}")]
pub struct PickleError {
    pub offset: usize,
    pub opcode: &'static str,
    pub kind: PickleErrorKind,
}

/// Caps on what a pickle may make the reader hold. The defaults are far above what any real checkpoint needs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Values on the stack.
    pub max_stack: usize,
    /// Open MARKs (nesting of tuple/list/dict literals).
    pub max_marks: usize,
    /// Memo entries.
    pub max_memo: usize,
    /// Containers, arrays and other objects created.
    pub max_objects: usize,
    /// Nesting depth of the final value tree (also what stops reference cycles).
    pub max_depth: usize,
    /// Nodes in the final value tree (shared sub-trees count each time they appear). The cap in force is the
    /// smaller of this and `16 * input length + 1024`.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stack: 1 << 20,
            max_marks: 1000,
            max_memo: 1 << 20,
            max_objects: 1 << 22,
            max_depth: 500,
            max_nodes: 1 << 24,
        }
    }
}

/// Reads a pickle with the default [`Limits`].
pub fn parse(data: &[u8]) -> Result<Value<'_>, PickleError> {
    parse_with_limits(data, &Limits::default())
}

/// Reads a pickle with the given limits.
pub fn parse_with_limits<'a>(data: &'a [u8], limits: &Limits) -> Result<Value<'a>, PickleError> {
    let mut vm = Vm::new(data, limits);
    let root = vm.run()?;
    vm.op = STOP;
    let node_cap = limits
        .max_nodes
        .min(data.len().saturating_mul(16).saturating_add(1024));
    let byte_cap = data.len().saturating_mul(4).saturating_add(1 << 20);
    let mut conv = Converter {
        vm: &vm,
        nodes_left: node_cap,
        node_cap,
        bytes_left: byte_cap.saturating_sub(vm.owned_bytes),
        byte_cap,
        max_depth: limits.max_depth,
    };
    conv.value(root, 0)
}

// ---------------------------------------------------------------------------------------------------------------
// Opcodes
// ---------------------------------------------------------------------------------------------------------------

const MARK: u8 = b'(';
const STOP: u8 = b'.';
const POP: u8 = b'0';
const POP_MARK: u8 = b'1';
const DUP: u8 = b'2';
const FLOAT: u8 = b'F';
const INT: u8 = b'I';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const LONG: u8 = b'L';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const PERSID: u8 = b'P';
const BINPERSID: u8 = b'Q';
const REDUCE: u8 = b'R';
const STRING: u8 = b'S';
const BINSTRING: u8 = b'T';
const SHORT_BINSTRING: u8 = b'U';
const UNICODE: u8 = b'V';
const BINUNICODE: u8 = b'X';
const APPEND: u8 = b'a';
const BUILD: u8 = b'b';
const GLOBAL: u8 = b'c';
const DICT: u8 = b'd';
const EMPTY_DICT: u8 = b'}';
const APPENDS: u8 = b'e';
const GET: u8 = b'g';
const BINGET: u8 = b'h';
const INST: u8 = b'i';
const LONG_BINGET: u8 = b'j';
const LIST: u8 = b'l';
const EMPTY_LIST: u8 = b']';
const OBJ: u8 = b'o';
const PUT: u8 = b'p';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const SETITEM: u8 = b's';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const SETITEMS: u8 = b'u';
const BINFLOAT: u8 = b'G';
const PROTO: u8 = 0x80;
const NEWOBJ: u8 = 0x81;
const EXT1: u8 = 0x82;
const EXT2: u8 = 0x83;
const EXT4: u8 = 0x84;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const LONG4: u8 = 0x8b;
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE8: u8 = 0x8d;
const BINBYTES8: u8 = 0x8e;
const EMPTY_SET: u8 = 0x8f;
const ADDITEMS: u8 = 0x90;
const FROZENSET: u8 = 0x91;
const NEWOBJ_EX: u8 = 0x92;
const STACK_GLOBAL: u8 = 0x93;
const MEMOIZE: u8 = 0x94;
const FRAME: u8 = 0x95;
const BYTEARRAY8: u8 = 0x96;
const NEXT_BUFFER: u8 = 0x97;
const READONLY_BUFFER: u8 = 0x98;

/// The pickletools name of an opcode byte.
pub fn opcode_name(op: u8) -> &'static str {
    match op {
        MARK => "MARK",
        STOP => "STOP",
        POP => "POP",
        POP_MARK => "POP_MARK",
        DUP => "DUP",
        FLOAT => "FLOAT",
        INT => "INT",
        BININT => "BININT",
        BININT1 => "BININT1",
        LONG => "LONG",
        BININT2 => "BININT2",
        NONE => "NONE",
        PERSID => "PERSID",
        BINPERSID => "BINPERSID",
        REDUCE => "REDUCE",
        STRING => "STRING",
        BINSTRING => "BINSTRING",
        SHORT_BINSTRING => "SHORT_BINSTRING",
        UNICODE => "UNICODE",
        BINUNICODE => "BINUNICODE",
        APPEND => "APPEND",
        BUILD => "BUILD",
        GLOBAL => "GLOBAL",
        DICT => "DICT",
        EMPTY_DICT => "EMPTY_DICT",
        APPENDS => "APPENDS",
        GET => "GET",
        BINGET => "BINGET",
        INST => "INST",
        LONG_BINGET => "LONG_BINGET",
        LIST => "LIST",
        EMPTY_LIST => "EMPTY_LIST",
        OBJ => "OBJ",
        PUT => "PUT",
        BINPUT => "BINPUT",
        LONG_BINPUT => "LONG_BINPUT",
        SETITEM => "SETITEM",
        TUPLE => "TUPLE",
        EMPTY_TUPLE => "EMPTY_TUPLE",
        SETITEMS => "SETITEMS",
        BINFLOAT => "BINFLOAT",
        PROTO => "PROTO",
        NEWOBJ => "NEWOBJ",
        EXT1 => "EXT1",
        EXT2 => "EXT2",
        EXT4 => "EXT4",
        TUPLE1 => "TUPLE1",
        TUPLE2 => "TUPLE2",
        TUPLE3 => "TUPLE3",
        NEWTRUE => "NEWTRUE",
        NEWFALSE => "NEWFALSE",
        LONG1 => "LONG1",
        LONG4 => "LONG4",
        BINBYTES => "BINBYTES",
        SHORT_BINBYTES => "SHORT_BINBYTES",
        SHORT_BINUNICODE => "SHORT_BINUNICODE",
        BINUNICODE8 => "BINUNICODE8",
        BINBYTES8 => "BINBYTES8",
        EMPTY_SET => "EMPTY_SET",
        ADDITEMS => "ADDITEMS",
        FROZENSET => "FROZENSET",
        NEWOBJ_EX => "NEWOBJ_EX",
        STACK_GLOBAL => "STACK_GLOBAL",
        MEMOIZE => "MEMOIZE",
        FRAME => "FRAME",
        BYTEARRAY8 => "BYTEARRAY8",
        NEXT_BUFFER => "NEXT_BUFFER",
        READONLY_BUFFER => "READONLY_BUFFER",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The virtual machine
// ---------------------------------------------------------------------------------------------------------------

/// A stack/memo slot: scalars inline, everything mutable or large in the arena (so sharing and cycles are cheap and
/// mutation through the memo works as in Python).
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    None,
    Bool(bool),
    Int(i64),
    BigInt(&'a [u8]),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    Ref(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Reconstruct,
    NdArrayType,
    DtypeType,
    Scalar,
    FromBuffer,
    Bf16Type,
    DictLike,
    FrozenDict,
    SetType,
    FrozenSetType,
    ListType,
    TupleType,
    BytesType,
    InertType,
    CodecsEncode,
    CopyregReconstructor,
    /// An unknown global; `class_like` when its last name component starts with an upper-case letter.
    Unknown {
        class_like: bool,
    },
}

#[derive(Debug)]
struct Global {
    module: String,
    name: String,
    kind: Known,
}

#[derive(Debug, Clone, Copy)]
enum Data<'a> {
    Borrowed(&'a [u8]),
    /// An arena `OwnedBytes` object.
    Owned(usize),
}

#[derive(Debug)]
struct ArrayObj<'a> {
    dtype: NpDtype,
    shape: Vec<usize>,
    fortran: bool,
    scalar: bool,
    data: Data<'a>,
}

#[derive(Debug)]
struct ObjectObj<'a> {
    global: usize,
    args: Vec<Item<'a>>,
    kwargs: Vec<(Item<'a>, Item<'a>)>,
    state: Option<Item<'a>>,
}

#[derive(Debug)]
enum Obj<'a> {
    List(Vec<Item<'a>>),
    Tuple(Vec<Item<'a>>),
    Dict(Vec<(Item<'a>, Item<'a>)>),
    Set(Vec<Item<'a>>),
    OwnedBytes(Vec<u8>),
    Global(Box<Global>),
    Object(Box<ObjectObj<'a>>),
    Array(Box<ArrayObj<'a>>),
    Dtype(NpDtype),
}

impl Obj<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Obj::List(_) => "list",
            Obj::Tuple(_) => "tuple",
            Obj::Dict(_) => "dict",
            Obj::Set(_) => "set",
            Obj::OwnedBytes(_) => "bytes",
            Obj::Global(_) => "global",
            Obj::Object(_) => "object stub",
            Obj::Array(_) => "ndarray",
            Obj::Dtype(_) => "dtype",
        }
    }
}

type Res<T> = Result<T, PickleErrorKind>;

struct Vm<'a, 'l> {
    data: &'a [u8],
    pos: usize,
    op_start: usize,
    op: u8,
    stack: Vec<Item<'a>>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item<'a>>,
    arena: Vec<Obj<'a>>,
    owned_bytes: usize,
    copied_items: usize,
    limits: &'l Limits,
}

fn wrong(expected: &'static str, found: &'static str) -> PickleErrorKind {
    PickleErrorKind::WrongType { expected, found }
}

fn bad_call(callable: &str, detail: impl Into<String>) -> PickleErrorKind {
    PickleErrorKind::BadCall {
        callable: callable.to_string(),
        detail: detail.into(),
    }
}

impl<'a, 'l> Vm<'a, 'l> {
    fn new(data: &'a [u8], limits: &'l Limits) -> Self {
        Vm {
            data,
            pos: 0,
            op_start: 0,
            op: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            arena: Vec::new(),
            owned_bytes: 0,
            copied_items: 0,
            limits,
        }
    }

    fn err(&self, kind: PickleErrorKind) -> PickleError {
        PickleError {
            offset: self.op_start,
            opcode: opcode_name(self.op),
            kind,
        }
    }

    // ----- reading the input -----

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: u64) -> Res<&'a [u8]> {
        let available = self.remaining();
        let Ok(len) = usize::try_from(n) else {
            return Err(PickleErrorKind::Truncated {
                needed: n,
                available,
            });
        };
        if len > available {
            return Err(PickleErrorKind::Truncated {
                needed: n,
                available,
            });
        }
        let start = self.pos;
        let s = self
            .data
            .get(start..start + len)
            .ok_or(PickleErrorKind::Truncated {
                needed: n,
                available,
            })?;
        self.pos = start + len;
        Ok(s)
    }

    fn take_array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> Res<u16> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }

    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn i32(&mut self) -> Res<i32> {
        Ok(i32::from_le_bytes(self.take_array()?))
    }

    fn u64(&mut self) -> Res<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// A protocol-0 text argument: bytes up to `\n` (at most 1024), without the newline.
    fn line(&mut self) -> Res<&'a str> {
        const MAX_LINE: usize = 1024;
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let window = rest.get(..rest.len().min(MAX_LINE + 1)).unwrap_or(rest);
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            if rest.len() > MAX_LINE {
                return Err(PickleErrorKind::BadText(format!(
                    "text argument longer than {MAX_LINE} bytes"
                )));
            }
            return Err(PickleErrorKind::Truncated {
                needed: rest.len() as u64 + 1,
                available: rest.len(),
            });
        };
        let bytes = self.take(nl as u64 + 1)?;
        let bytes = bytes.get(..nl).unwrap_or(&[]);
        std::str::from_utf8(bytes).map_err(|_| PickleErrorKind::InvalidUtf8)
    }

    fn utf8(bytes: &'a [u8]) -> Res<&'a str> {
        std::str::from_utf8(bytes).map_err(|_| PickleErrorKind::InvalidUtf8)
    }

    // ----- stack -----

    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, item: Item<'a>) -> Res<()> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(PickleErrorKind::Limit {
                what: "value stack",
                limit: self.limits.max_stack,
            });
        }
        self.stack.push(item);
        Ok(())
    }

    fn pop(&mut self) -> Res<Item<'a>> {
        if self.stack.len() <= self.base() {
            return Err(PickleErrorKind::StackUnderflow);
        }
        self.stack.pop().ok_or(PickleErrorKind::StackUnderflow)
    }

    fn top(&self) -> Res<Item<'a>> {
        if self.stack.len() <= self.base() {
            return Err(PickleErrorKind::StackUnderflow);
        }
        self.stack
            .last()
            .copied()
            .ok_or(PickleErrorKind::StackUnderflow)
    }

    fn pop_mark(&mut self) -> Res<Vec<Item<'a>>> {
        let m = self.marks.pop().ok_or(PickleErrorKind::NoMark)?;
        if m > self.stack.len() {
            return Err(PickleErrorKind::StackUnderflow);
        }
        Ok(self.stack.split_off(m))
    }

    fn alloc(&mut self, obj: Obj<'a>) -> Res<Item<'a>> {
        if self.arena.len() >= self.limits.max_objects {
            return Err(PickleErrorKind::Limit {
                what: "number of objects",
                limit: self.limits.max_objects,
            });
        }
        self.arena.push(obj);
        Ok(Item::Ref(self.arena.len() - 1))
    }

    fn obj(&self, item: Item<'a>) -> Option<&Obj<'a>> {
        match item {
            Item::Ref(i) => self.arena.get(i),
            _ => None,
        }
    }

    fn item_type(&self, item: Item<'a>) -> &'static str {
        match item {
            Item::None => "None",
            Item::Bool(_) => "bool",
            Item::Int(_) | Item::BigInt(_) => "int",
            Item::Float(_) => "float",
            Item::Str(_) => "str",
            Item::Bytes(_) => "bytes",
            Item::Ref(i) => self
                .arena
                .get(i)
                .map_or("invalid reference", Obj::type_name),
        }
    }

    fn memo_put(&mut self, idx: u64, item: Item<'a>) -> Res<()> {
        if !self.memo.contains_key(&idx) && self.memo.len() >= self.limits.max_memo {
            return Err(PickleErrorKind::Limit {
                what: "memo size",
                limit: self.limits.max_memo,
            });
        }
        self.memo.insert(idx, item);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Res<()> {
        let item = *self
            .memo
            .get(&idx)
            .ok_or(PickleErrorKind::MemoMissing(idx))?;
        self.push(item)
    }

    fn charge_owned(&mut self, n: usize) -> Res<()> {
        let cap = self.data.len().saturating_mul(2).saturating_add(1 << 16);
        self.owned_bytes = self.owned_bytes.saturating_add(n);
        if self.owned_bytes > cap {
            return Err(PickleErrorKind::Limit {
                what: "bytes created by calls",
                limit: cap,
            });
        }
        Ok(())
    }

    // ----- main loop -----

    fn run(&mut self) -> Result<Item<'a>, PickleError> {
        loop {
            self.op_start = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                self.op = STOP;
                return Err(PickleError {
                    offset: self.data.len(),
                    opcode: "end of input",
                    kind: PickleErrorKind::NoStop,
                });
            };
            self.op = op;
            self.pos += 1;
            match self.step(op) {
                Ok(Some(root)) => return Ok(root),
                Ok(None) => {}
                Err(kind) => return Err(self.err(kind)),
            }
        }
    }

    fn step(&mut self, op: u8) -> Res<Option<Item<'a>>> {
        match op {
            PROTO => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(PickleErrorKind::UnsupportedProtocol(p));
                }
            }
            FRAME => {
                let n = self.u64()?;
                if n > self.remaining() as u64 {
                    return Err(PickleErrorKind::Truncated {
                        needed: n,
                        available: self.remaining(),
                    });
                }
            }
            STOP => return self.pop().map(Some),
            MARK => {
                if self.marks.len() >= self.limits.max_marks {
                    return Err(PickleErrorKind::Limit {
                        what: "MARK nesting depth",
                        limit: self.limits.max_marks,
                    });
                }
                self.marks.push(self.stack.len());
            }
            POP => {
                if self.stack.len() > self.base() {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            DUP => {
                let t = self.top()?;
                self.push(t)?;
            }
            NONE => self.push(Item::None)?,
            NEWTRUE => self.push(Item::Bool(true))?,
            NEWFALSE => self.push(Item::Bool(false))?,
            BININT => {
                let v = self.i32()?;
                self.push(Item::Int(i64::from(v)))?
            }
            BININT1 => {
                let v = self.u8()?;
                self.push(Item::Int(i64::from(v)))?
            }
            BININT2 => {
                let v = self.u16()?;
                self.push(Item::Int(i64::from(v)))?
            }
            LONG1 => {
                let n = self.u8()?;
                let b = self.take(u64::from(n))?;
                self.push(long_item(b))?
            }
            LONG4 => {
                let n = self.i32()?;
                let n = u64::try_from(n).map_err(|_| bad_call("LONG4", "negative byte count"))?;
                let b = self.take(n)?;
                self.push(long_item(b))?
            }
            INT => {
                let s = self.line()?;
                let item = match s {
                    "00" => Item::Bool(false),
                    "01" => Item::Bool(true),
                    _ => Item::Int(parse_text_int(s)?),
                };
                self.push(item)?
            }
            LONG => {
                let s = self.line()?;
                let s = s.strip_suffix('L').unwrap_or(s);
                let v = parse_text_int(s)?;
                self.push(Item::Int(v))?
            }
            FLOAT => {
                let s = self.line()?;
                let v: f64 = s
                    .trim()
                    .parse()
                    .map_err(|_| PickleErrorKind::BadText(format!("not a float: {s:?}")))?;
                self.push(Item::Float(v))?
            }
            BINFLOAT => {
                let v = f64::from_be_bytes(self.take_array()?);
                self.push(Item::Float(v))?
            }
            SHORT_BINUNICODE => {
                let n = self.u8()?;
                let s = Self::utf8(self.take(u64::from(n))?)?;
                self.push(Item::Str(s))?
            }
            BINUNICODE => {
                let n = self.u32()?;
                let s = Self::utf8(self.take(u64::from(n))?)?;
                self.push(Item::Str(s))?
            }
            BINUNICODE8 => {
                let n = self.u64()?;
                let s = Self::utf8(self.take(n)?)?;
                self.push(Item::Str(s))?
            }
            SHORT_BINSTRING | BINSTRING => {
                let n = if op == SHORT_BINSTRING {
                    u64::from(self.u8()?)
                } else {
                    u64::try_from(self.i32()?)
                        .map_err(|_| bad_call("BINSTRING", "negative length"))?
                };
                // A Python 2 `str`: a text string when it is valid UTF-8 (Python 3 decodes it as ASCII by default),
                // bytes otherwise.
                let b = self.take(n)?;
                let item = match std::str::from_utf8(b) {
                    Ok(s) => Item::Str(s),
                    Err(_) => Item::Bytes(b),
                };
                self.push(item)?
            }
            SHORT_BINBYTES => {
                let n = self.u8()?;
                let b = self.take(u64::from(n))?;
                self.push(Item::Bytes(b))?
            }
            BINBYTES => {
                let n = self.u32()?;
                let b = self.take(u64::from(n))?;
                self.push(Item::Bytes(b))?
            }
            BINBYTES8 | BYTEARRAY8 => {
                let n = self.u64()?;
                let b = self.take(n)?;
                self.push(Item::Bytes(b))?
            }
            NEXT_BUFFER => return Err(PickleErrorKind::Unsupported(
                "out-of-band buffers (protocol 5 NEXT_BUFFER) are not supported; pickle in-band"
                    .into(),
            )),
            READONLY_BUFFER => {
                self.top()?;
            }
            EMPTY_DICT => {
                let it = self.alloc(Obj::Dict(Vec::new()))?;
                self.push(it)?
            }
            EMPTY_LIST => {
                let it = self.alloc(Obj::List(Vec::new()))?;
                self.push(it)?
            }
            EMPTY_TUPLE => {
                let it = self.alloc(Obj::Tuple(Vec::new()))?;
                self.push(it)?
            }
            EMPTY_SET => {
                let it = self.alloc(Obj::Set(Vec::new()))?;
                self.push(it)?
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = usize::from(op - TUPLE1 + 1);
                if self.stack.len() < self.base() + n {
                    return Err(PickleErrorKind::StackUnderflow);
                }
                let items = self.stack.split_off(self.stack.len() - n);
                let it = self.alloc(Obj::Tuple(items))?;
                self.push(it)?
            }
            TUPLE => {
                let items = self.pop_mark()?;
                let it = self.alloc(Obj::Tuple(items))?;
                self.push(it)?
            }
            LIST => {
                let items = self.pop_mark()?;
                let it = self.alloc(Obj::List(items))?;
                self.push(it)?
            }
            DICT => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                let it = self.alloc(Obj::Dict(pairs))?;
                self.push(it)?
            }
            FROZENSET => {
                let items = self.pop_mark()?;
                let it = self.alloc(Obj::Set(items))?;
                self.push(it)?
            }
            APPEND => {
                let v = self.pop()?;
                let target = self.top()?;
                self.extend_list(target, vec![v])?;
            }
            APPENDS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.extend_list(target, items)?;
            }
            SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?;
                self.extend_dict(target, vec![(k, v)])?;
            }
            SETITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.extend_dict(target, pairs(items)?)?;
            }
            ADDITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                let found = self.item_type(target);
                match target {
                    Item::Ref(i) => match self.arena.get_mut(i) {
                        Some(Obj::Set(s)) => s.extend(items),
                        _ => return Err(wrong("a set to add items to", found)),
                    },
                    _ => return Err(wrong("a set to add items to", found)),
                }
            }
            MEMOIZE => {
                let t = self.top()?;
                let idx = self.memo.len() as u64;
                self.memo_put(idx, t)?;
            }
            BINPUT => {
                let idx = self.u8()?;
                let t = self.top()?;
                self.memo_put(u64::from(idx), t)?;
            }
            LONG_BINPUT => {
                let idx = self.u32()?;
                let t = self.top()?;
                self.memo_put(u64::from(idx), t)?;
            }
            PUT => {
                let s = self.line()?;
                let idx = parse_text_index(s)?;
                let t = self.top()?;
                self.memo_put(idx, t)?;
            }
            BINGET => {
                let idx = self.u8()?;
                self.memo_get(u64::from(idx))?;
            }
            LONG_BINGET => {
                let idx = self.u32()?;
                self.memo_get(u64::from(idx))?;
            }
            GET => {
                let s = self.line()?;
                let idx = parse_text_index(s)?;
                self.memo_get(idx)?;
            }
            GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                let g = classify_global(module, name)?;
                let it = self.alloc(Obj::Global(Box::new(g)))?;
                self.push(it)?
            }
            STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Item::Str(module), Item::Str(name)) = (module, name) else {
                    return Err(wrong("two strings (module, name)", self.item_type(module)));
                };
                let g = classify_global(module, name)?;
                let it = self.alloc(Obj::Global(Box::new(g)))?;
                self.push(it)?
            }
            REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let args = self.tuple_items(args, "a tuple of REDUCE arguments")?;
                let it = self.call(callable, args)?;
                self.push(it)?
            }
            NEWOBJ => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_items(args, "a tuple of NEWOBJ arguments")?;
                let it = self.new_object(cls, args, Vec::new())?;
                self.push(it)?
            }
            NEWOBJ_EX => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_items(args, "a tuple of NEWOBJ_EX arguments")?;
                let kwargs = match self.obj(kwargs) {
                    Some(Obj::Dict(d)) => d.clone(),
                    _ => return Err(wrong("a dict of keyword arguments", self.item_type(kwargs))),
                };
                self.charge_items(kwargs.len().saturating_mul(2))?;
                let it = self.new_object(cls, args, kwargs)?;
                self.push(it)?
            }
            BUILD => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)?;
            }
            PERSID | BINPERSID => {
                return Err(PickleErrorKind::Unsupported(
                    "persistent ids (torch-style external storages) are not supported".into(),
                ))
            }
            EXT1 | EXT2 | EXT4 => {
                return Err(PickleErrorKind::Unsupported(
                    "the copyreg extension registry is not supported".into(),
                ))
            }
            INST | OBJ => {
                return Err(PickleErrorKind::Unsupported(
                    "protocol 0/1 instance opcodes are not supported (use protocol 2 or later)"
                        .into(),
                ))
            }
            STRING | UNICODE => {
                return Err(PickleErrorKind::Unsupported(
                    "protocol 0 quoted strings are not supported (use protocol 2 or later)".into(),
                ))
            }
            other => return Err(PickleErrorKind::UnknownOpcode(other)),
        }
        Ok(None)
    }

    fn extend_list(&mut self, target: Item<'a>, items: Vec<Item<'a>>) -> Res<()> {
        let found = self.item_type(target);
        match target {
            Item::Ref(i) => match self.arena.get_mut(i) {
                Some(Obj::List(l)) => {
                    l.extend(items);
                    Ok(())
                }
                _ => Err(wrong("a list to append to", found)),
            },
            _ => Err(wrong("a list to append to", found)),
        }
    }

    fn extend_dict(&mut self, target: Item<'a>, items: Vec<(Item<'a>, Item<'a>)>) -> Res<()> {
        let found = self.item_type(target);
        match target {
            Item::Ref(i) => match self.arena.get_mut(i) {
                Some(Obj::Dict(d)) => {
                    d.extend(items);
                    Ok(())
                }
                _ => Err(wrong("a dict to set items in", found)),
            },
            _ => Err(wrong("a dict to set items in", found)),
        }
    }

    /// A copy of a tuple's items (copies are charged against the input length).
    fn tuple_items(&mut self, item: Item<'a>, expected: &'static str) -> Res<Vec<Item<'a>>> {
        let items = match self.obj(item) {
            Some(Obj::Tuple(t)) => t.clone(),
            _ => return Err(wrong(expected, self.item_type(item))),
        };
        self.charge_items(items.len())?;
        Ok(items)
    }

    /// Calls may copy containers that the memo shares; the total copied is capped by the input length so a short
    /// pickle cannot copy one big container over and over.
    fn charge_items(&mut self, n: usize) -> Res<()> {
        let cap = self.data.len().saturating_mul(4).saturating_add(4096);
        self.copied_items = self.copied_items.saturating_add(n);
        if self.copied_items > cap {
            return Err(PickleErrorKind::Limit {
                what: "items copied by calls",
                limit: cap,
            });
        }
        Ok(())
    }

    fn global(&self, item: Item<'a>) -> Option<(usize, &Global)> {
        match item {
            Item::Ref(i) => match self.arena.get(i) {
                Some(Obj::Global(g)) => Some((i, g)),
                _ => None,
            },
            _ => None,
        }
    }

    /// `REDUCE`: applies an allow-listed callable, stubs a class-like unknown global, refuses everything else.
    fn call(&mut self, callable: Item<'a>, args: Vec<Item<'a>>) -> Res<Item<'a>> {
        let Some((gi, g)) = self.global(callable) else {
            return Err(wrong(
                "a global (class or function) to call",
                self.item_type(callable),
            ));
        };
        let kind = g.kind;
        let qual = format!("{}.{}", g.module, g.name);
        match kind {
            Known::Reconstruct => {
                // _reconstruct(ndarray, shape, dtype_char): an empty array that BUILD fills in.
                let cls = args.first().copied().unwrap_or(Item::None);
                match self.global(cls) {
                    Some((_, c)) if c.kind == Known::NdArrayType => {}
                    _ => {
                        return Err(bad_call(
                            &qual,
                            format!(
                                "first argument must be numpy.ndarray (subclasses are not supported), found {}",
                                self.item_type(cls)
                            ),
                        ))
                    }
                }
                if args.len() != 3 {
                    return Err(bad_call(
                        &qual,
                        format!("expected 3 arguments, got {}", args.len()),
                    ));
                }
                self.alloc(Obj::Array(Box::new(ArrayObj {
                    dtype: NpDtype {
                        elem: ElemType::I8,
                        big_endian: false,
                    },
                    shape: vec![0],
                    fortran: false,
                    scalar: false,
                    data: Data::Borrowed(&[]),
                })))
            }
            Known::DtypeType => {
                // dtype(obj, align, copy)
                let Some(&spec) = args.first() else {
                    return Err(bad_call(&qual, "no arguments"));
                };
                let dtype = match spec {
                    Item::Str(s) => parse_dtype_str(&qual, s)?,
                    Item::Bytes(b) => parse_dtype_str(&qual, Self::utf8(b)?)?,
                    other => match self.global(other) {
                        Some((_, t)) if t.kind == Known::Bf16Type => NpDtype {
                            elem: ElemType::BF16,
                            big_endian: false,
                        },
                        Some((_, t)) => {
                            return Err(PickleErrorKind::Numpy(format!(
                                "dtype of type {}.{} is not supported",
                                t.module, t.name
                            )))
                        }
                        None => {
                            if let Some(Obj::OwnedBytes(b)) = self.obj(other) {
                                let s = std::str::from_utf8(b)
                                    .map_err(|_| PickleErrorKind::InvalidUtf8)?;
                                parse_dtype_str(&qual, s)?
                            } else {
                                return Err(bad_call(
                                    &qual,
                                    format!("dtype spec is a {}", self.item_type(other)),
                                ));
                            }
                        }
                    },
                };
                self.alloc(Obj::Dtype(dtype))
            }
            Known::Scalar => {
                // scalar(dtype, bytes)
                if args.len() != 2 {
                    return Err(bad_call(
                        &qual,
                        format!(
                            "expected (dtype, bytes), got {} arguments (object scalars are not supported)",
                            args.len()
                        ),
                    ));
                }
                let dtype = self.dtype_arg(&qual, args[0])?;
                let data = self.bytes_arg(&qual, args[1])?;
                let arr = ArrayObj {
                    dtype,
                    shape: Vec::new(),
                    fortran: false,
                    scalar: true,
                    data,
                };
                self.check_array(&arr)?;
                self.alloc(Obj::Array(Box::new(arr)))
            }
            Known::FromBuffer => {
                // _frombuffer(buffer, dtype, shape, order)
                if args.len() != 4 {
                    return Err(bad_call(
                        &qual,
                        format!("expected 4 arguments, got {}", args.len()),
                    ));
                }
                let data = self.bytes_arg(&qual, args[0])?;
                let dtype = self.dtype_arg(&qual, args[1])?;
                let shape = self.shape_arg(&qual, args[2])?;
                let fortran = match args[3] {
                    Item::Str("C") => false,
                    Item::Str("F") => true,
                    other => {
                        return Err(bad_call(
                            &qual,
                            format!("order must be 'C' or 'F', found {}", self.item_type(other)),
                        ))
                    }
                };
                let arr = ArrayObj {
                    dtype,
                    shape,
                    fortran,
                    scalar: false,
                    data,
                };
                self.check_array(&arr)?;
                self.alloc(Obj::Array(Box::new(arr)))
            }
            Known::DictLike | Known::FrozenDict => {
                let mut entries = Vec::new();
                if let Some(&first) = args.first() {
                    match self.obj(first) {
                        Some(Obj::Dict(d)) => {
                            entries = d.clone();
                        }
                        Some(Obj::List(l)) | Some(Obj::Tuple(l)) if kind == Known::DictLike => {
                            for &pair in l {
                                match self.obj(pair) {
                                    Some(Obj::Tuple(kv)) | Some(Obj::List(kv)) if kv.len() == 2 => {
                                        entries.push((kv[0], kv[1]))
                                    }
                                    _ => {
                                        return Err(bad_call(
                                            &qual,
                                            "items must be (key, value) pairs",
                                        ))
                                    }
                                }
                            }
                        }
                        // defaultdict(factory): the factory is ignored.
                        _ if g_is_defaultdict(&qual) => {}
                        _ => {
                            return Err(bad_call(
                                &qual,
                                format!("cannot build a dict from a {}", self.item_type(first)),
                            ))
                        }
                    }
                }
                self.charge_items(entries.len().saturating_mul(2))?;
                self.alloc(Obj::Dict(entries))
            }
            Known::SetType | Known::FrozenSetType | Known::ListType | Known::TupleType => {
                let items = match args.first() {
                    None => Vec::new(),
                    Some(&a) => match self.obj(a) {
                        Some(Obj::List(l)) | Some(Obj::Tuple(l)) | Some(Obj::Set(l)) => l.clone(),
                        _ => {
                            return Err(bad_call(
                                &qual,
                                format!("cannot build from a {}", self.item_type(a)),
                            ))
                        }
                    },
                };
                self.charge_items(items.len())?;
                let obj = match kind {
                    Known::ListType => Obj::List(items),
                    Known::TupleType => Obj::Tuple(items),
                    _ => Obj::Set(items),
                };
                self.alloc(obj)
            }
            Known::BytesType => match args.first() {
                None => Ok(Item::Bytes(&[])),
                Some(&Item::Bytes(b)) => Ok(Item::Bytes(b)),
                Some(&a) => {
                    if let Some(Obj::OwnedBytes(_)) = self.obj(a) {
                        Ok(a)
                    } else {
                        Err(bad_call(
                            &qual,
                            format!("cannot build bytes from a {}", self.item_type(a)),
                        ))
                    }
                }
            },
            Known::CodecsEncode => {
                // _codecs.encode(str, 'latin1'): how protocol 2 writes bytes.
                let (Some(Item::Str(s)), enc) = (args.first().copied(), args.get(1).copied())
                else {
                    return Err(bad_call(&qual, "expected (str, encoding)"));
                };
                match enc {
                    Some(Item::Str("latin1"))
                    | Some(Item::Str("latin-1"))
                    | Some(Item::Str("iso-8859-1")) => {}
                    _ => return Err(bad_call(&qual, "only the latin1 encoding is supported")),
                }
                self.charge_owned(s.len())?;
                let mut out = Vec::with_capacity(s.len());
                for c in s.chars() {
                    let b = u8::try_from(u32::from(c))
                        .map_err(|_| bad_call(&qual, "character outside latin1"))?;
                    out.push(b);
                }
                self.alloc(Obj::OwnedBytes(out))
            }
            Known::CopyregReconstructor => {
                // _reconstructor(cls, base, state): an instance of cls, filled in by a later BUILD.
                let cls = args.first().copied().unwrap_or(Item::None);
                let Some((ci, c)) = self.global(cls) else {
                    return Err(bad_call(&qual, "first argument must be a class"));
                };
                if !matches!(c.kind, Known::Unknown { .. }) {
                    return Err(bad_call(
                        &qual,
                        format!("reconstructing {}.{} is not supported", c.module, c.name),
                    ));
                }
                let state_arg: Vec<Item<'a>> = match args.get(2) {
                    Some(Item::None) | None => Vec::new(),
                    Some(&s) => vec![s],
                };
                self.alloc(Obj::Object(Box::new(ObjectObj {
                    global: ci,
                    args: state_arg,
                    kwargs: Vec::new(),
                    state: None,
                })))
            }
            Known::Unknown { class_like: true } => self.alloc(Obj::Object(Box::new(ObjectObj {
                global: gi,
                args,
                kwargs: Vec::new(),
                state: None,
            }))),
            Known::Unknown { class_like: false } => {
                let (module, name) = self
                    .global(callable)
                    .map(|(_, g)| (g.module.clone(), g.name.clone()))
                    .unwrap_or_default();
                Err(PickleErrorKind::UnknownFunction { module, name })
            }
            Known::NdArrayType | Known::Bf16Type | Known::InertType => {
                Err(bad_call(&qual, "calling this type is not supported"))
            }
        }
    }

    /// `NEWOBJ`/`NEWOBJ_EX`: `cls.__new__(cls, *args, **kwargs)`.
    fn new_object(
        &mut self,
        cls: Item<'a>,
        args: Vec<Item<'a>>,
        kwargs: Vec<(Item<'a>, Item<'a>)>,
    ) -> Res<Item<'a>> {
        let Some((gi, g)) = self.global(cls) else {
            return Err(wrong("a class", self.item_type(cls)));
        };
        match g.kind {
            // dict/set/list subclasses: their items follow via SETITEMS/ADDITEMS/APPENDS.
            Known::DictLike | Known::FrozenDict => self.alloc(Obj::Dict(Vec::new())),
            Known::SetType | Known::FrozenSetType => self.alloc(Obj::Set(Vec::new())),
            Known::ListType => self.alloc(Obj::List(Vec::new())),
            Known::Unknown { .. } => self.alloc(Obj::Object(Box::new(ObjectObj {
                global: gi,
                args,
                kwargs,
                state: None,
            }))),
            _ => Err(bad_call(
                &format!("{}.{}", g.module, g.name),
                "NEWOBJ of this type is not supported",
            )),
        }
    }

    fn dtype_arg(&self, qual: &str, item: Item<'a>) -> Res<NpDtype> {
        match self.obj(item) {
            Some(Obj::Dtype(d)) => Ok(*d),
            _ => Err(bad_call(
                qual,
                format!("expected a numpy dtype, found {}", self.item_type(item)),
            )),
        }
    }

    fn bytes_arg(&self, qual: &str, item: Item<'a>) -> Res<Data<'a>> {
        match item {
            Item::Bytes(b) => Ok(Data::Borrowed(b)),
            Item::Ref(i) if matches!(self.arena.get(i), Some(Obj::OwnedBytes(_))) => {
                Ok(Data::Owned(i))
            }
            _ => Err(bad_call(
                qual,
                format!(
                    "array data must be bytes, found {} (object arrays are not supported)",
                    self.item_type(item)
                ),
            )),
        }
    }

    fn shape_arg(&self, qual: &str, item: Item<'a>) -> Res<Vec<usize>> {
        let dims = match self.obj(item) {
            Some(Obj::Tuple(t)) | Some(Obj::List(t)) => t,
            _ => {
                // A bare int is a 1-d shape.
                if let Item::Int(n) = item {
                    let d = usize::try_from(n).map_err(|_| bad_call(qual, "negative dimension"))?;
                    return Ok(vec![d]);
                }
                return Err(bad_call(
                    qual,
                    format!(
                        "shape must be a tuple of ints, found {}",
                        self.item_type(item)
                    ),
                ));
            }
        };
        if dims.len() > 64 {
            return Err(PickleErrorKind::Numpy(format!(
                "{} dimensions (numpy allows 64)",
                dims.len()
            )));
        }
        dims.iter()
            .map(|&d| match d {
                Item::Int(n) => usize::try_from(n)
                    .map_err(|_| PickleErrorKind::Numpy(format!("negative dimension {n}"))),
                other => Err(PickleErrorKind::Numpy(format!(
                    "shape entry is a {}, expected an int",
                    self.item_type(other)
                ))),
            })
            .collect()
    }

    fn data_len(&self, data: Data<'a>) -> usize {
        match data {
            Data::Borrowed(b) => b.len(),
            Data::Owned(i) => match self.arena.get(i) {
                Some(Obj::OwnedBytes(b)) => b.len(),
                _ => 0,
            },
        }
    }

    fn check_array(&self, arr: &ArrayObj<'a>) -> Res<()> {
        let len = self.data_len(arr.data);
        let expected = checked_numel(&arr.shape).and_then(|n| n.checked_mul(arr.dtype.elem.size()));
        match expected {
            Some(e) if e == len => Ok(()),
            Some(e) => Err(PickleErrorKind::Numpy(format!(
                "array of shape {:?} and dtype {} needs {e} bytes of data but the pickle holds {len}",
                arr.shape, arr.dtype
            ))),
            None => Err(PickleErrorKind::Numpy(format!(
                "array shape {:?} overflows",
                arr.shape
            ))),
        }
    }

    /// `BUILD`: sets the state of an array, a dtype or a stub; refused on anything else.
    fn build(&mut self, target: Item<'a>, state: Item<'a>) -> Res<()> {
        let Item::Ref(ti) = target else {
            return Err(wrong("an object to BUILD", self.item_type(target)));
        };
        match self.arena.get(ti) {
            Some(Obj::Array(_)) => {
                let st = self.tuple_items(state, "an ndarray state tuple")?;
                // (version, shape, dtype, is_fortran, data) or the older form without version.
                let rest: &[Item<'a>] = match st.len() {
                    5 => st.get(1..).unwrap_or(&[]),
                    4 => &st,
                    n => {
                        return Err(PickleErrorKind::Numpy(format!(
                            "ndarray state has {n} entries, expected 4 or 5"
                        )))
                    }
                };
                let [shape, dtype, fortran, data] = rest else {
                    return Err(PickleErrorKind::Numpy("malformed ndarray state".into()));
                };
                let qual = "ndarray.__setstate__";
                let shape = self.shape_arg(qual, *shape)?;
                let dtype = self.dtype_arg(qual, *dtype)?;
                let fortran = match fortran {
                    Item::Bool(b) => *b,
                    Item::Int(i) => *i != 0,
                    other => {
                        return Err(bad_call(
                            qual,
                            format!(
                                "is_fortran must be a bool, found {}",
                                self.item_type(*other)
                            ),
                        ))
                    }
                };
                let data = self.bytes_arg(qual, *data)?;
                let arr = ArrayObj {
                    dtype,
                    shape,
                    fortran,
                    scalar: false,
                    data,
                };
                self.check_array(&arr)?;
                if let Some(slot) = self.arena.get_mut(ti) {
                    *slot = Obj::Array(Box::new(arr));
                }
                Ok(())
            }
            Some(Obj::Dtype(d)) => {
                let mut d = *d;
                let st = self.tuple_items(state, "a dtype state tuple")?;
                // (version, endian, subarray, names, fields, elsize, alignment, flags[, metadata])
                let endian = st.get(1).copied();
                match endian {
                    Some(Item::Str(">")) => d.big_endian = true,
                    Some(Item::Str("<")) | Some(Item::Str("=")) | Some(Item::Str("|")) => {
                        d.big_endian = false
                    }
                    _ => {
                        return Err(PickleErrorKind::Numpy(
                            "dtype state without a byte-order string".into(),
                        ))
                    }
                }
                for (i, what) in [
                    (2usize, "sub-array"),
                    (3, "structured (named fields)"),
                    (4, "structured (fields)"),
                ] {
                    if !matches!(st.get(i), None | Some(Item::None)) {
                        return Err(PickleErrorKind::Numpy(format!(
                            "{what} dtypes are not supported"
                        )));
                    }
                }
                if let Some(slot) = self.arena.get_mut(ti) {
                    *slot = Obj::Dtype(d);
                }
                Ok(())
            }
            Some(Obj::Object(_)) => {
                if let Some(Obj::Object(o)) = self.arena.get_mut(ti) {
                    o.state = Some(state);
                }
                Ok(())
            }
            _ => Err(wrong(
                "an ndarray, dtype or object stub to BUILD",
                self.item_type(target),
            )),
        }
    }
}

fn g_is_defaultdict(qual: &str) -> bool {
    qual == "collections.defaultdict"
}

// `is_multiple_of` is newer than the workspace's rust-version (1.85).
#[allow(clippy::manual_is_multiple_of)]
fn pairs<'a>(items: Vec<Item<'a>>) -> Res<Vec<(Item<'a>, Item<'a>)>> {
    if items.len() % 2 != 0 {
        return Err(PickleErrorKind::Unsupported(
            "odd number of items for a dict (malformed pickle)".into(),
        ));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_item(b: &[u8]) -> Item<'_> {
    if b.is_empty() {
        return Item::Int(0);
    }
    let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    // Strip redundant sign-extension bytes to see whether the value fits i64.
    let mut n = b.len();
    while n > 1 {
        let (Some(&top), Some(&below)) = (b.get(n - 1), b.get(n - 2)) else {
            break;
        };
        if top == fill && (below & 0x80 != 0) == negative {
            n -= 1;
        } else {
            break;
        }
    }
    if n <= 8 {
        let mut buf = [fill; 8];
        for (dst, src) in buf.iter_mut().zip(b.iter().take(n)) {
            *dst = *src;
        }
        Item::Int(i64::from_le_bytes(buf))
    } else {
        Item::BigInt(b)
    }
}

fn parse_text_int(s: &str) -> Res<i64> {
    s.trim()
        .parse()
        .map_err(|_| PickleErrorKind::BadText(format!("not an integer that fits 64 bits: {s:?}")))
}

fn parse_text_index(s: &str) -> Res<u64> {
    s.trim()
        .parse()
        .map_err(|_| PickleErrorKind::BadText(format!("not a memo index: {s:?}")))
}

fn parse_dtype_str(qual: &str, s: &str) -> Res<NpDtype> {
    match ElemType::parse_numpy(s) {
        Some((elem, big_endian)) => Ok(NpDtype { elem, big_endian }),
        None => Err(bad_call(
            qual,
            format!("numpy dtype {s:?} is not supported (bool, ints, float16/32/64, bfloat16 are)"),
        )),
    }
}

fn is_identifier_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !part.as_bytes().first().is_some_and(u8::is_ascii_digit)
        })
}

const MAX_GLOBAL_NAME: usize = 256;

/// Classifies a global as understood, refused or unknown (see the module docs).
fn classify_global(module: &str, name: &str) -> Res<Global> {
    let forbidden = || PickleErrorKind::ForbiddenGlobal {
        module: module.to_string(),
        name: name.to_string(),
    };
    if module.len() > MAX_GLOBAL_NAME || name.len() > MAX_GLOBAL_NAME {
        return Err(PickleErrorKind::BadText(format!(
            "global name longer than {MAX_GLOBAL_NAME} bytes"
        )));
    }
    if !is_identifier_path(module) || !is_identifier_path(name) {
        return Err(PickleErrorKind::BadText(format!(
            "global {module:?}.{name:?} is not a dotted identifier"
        )));
    }
    // Python 2 names that Python 3's unpickler maps.
    let module_n = match module {
        "__builtin__" | "exceptions" => "builtins",
        "copy_reg" => "copyreg",
        m => m,
    };
    if name.split('.').any(|p| p.starts_with("__")) {
        return Err(forbidden());
    }
    if module_n
        .split('.')
        .any(|p| p.starts_with("__") && p != "__main__")
    {
        return Err(forbidden());
    }
    let denied = DENIED_MODULES.iter().any(|d| {
        module_n == *d
            || module_n
                .strip_prefix(*d)
                .is_some_and(|rest| rest.starts_with('.'))
    });
    if denied {
        return Err(forbidden());
    }
    let numpy_multiarray = matches!(module_n, "numpy.core.multiarray" | "numpy._core.multiarray");
    let numpy_numeric = matches!(module_n, "numpy.core.numeric" | "numpy._core.numeric");
    let kind = match (module_n, name) {
        (_, "_reconstruct") if numpy_multiarray => Known::Reconstruct,
        (_, "scalar") if numpy_multiarray => Known::Scalar,
        (_, "ndarray") if numpy_multiarray => Known::NdArrayType,
        (_, "dtype") if numpy_multiarray => Known::DtypeType,
        (_, "_frombuffer") if numpy_numeric => Known::FromBuffer,
        ("numpy", "ndarray") => Known::NdArrayType,
        ("numpy", "dtype") => Known::DtypeType,
        ("ml_dtypes", "bfloat16")
        | ("ml_dtypes._ml_dtypes_ext", "bfloat16")
        | ("jax.numpy", "bfloat16") => Known::Bf16Type,
        ("collections", "OrderedDict") | ("collections", "defaultdict") => Known::DictLike,
        ("flax.core.frozen_dict", "FrozenDict") => Known::FrozenDict,
        ("_codecs", "encode") => Known::CodecsEncode,
        ("copyreg", "_reconstructor") => Known::CopyregReconstructor,
        ("builtins", n) if INERT_BUILTINS.contains(&n) => match n {
            "set" => Known::SetType,
            "frozenset" => Known::FrozenSetType,
            "list" => Known::ListType,
            "tuple" => Known::TupleType,
            "dict" => Known::DictLike,
            "bytes" | "bytearray" => Known::BytesType,
            _ => Known::InertType,
        },
        ("builtins", _) | ("copyreg", _) | ("_codecs", _) => return Err(forbidden()),
        (m, _) if m == "numpy" || m.starts_with("numpy.") => {
            // Other numpy globals are never needed for arrays and scalars; refuse rather than stub them.
            return Err(PickleErrorKind::Unsupported(format!(
                "numpy global {module}.{name} is not supported (only arrays, dtypes and scalars are)"
            )));
        }
        _ => {
            let last = name.rsplit('.').next().unwrap_or(name);
            let class_like = last
                .trim_start_matches('_')
                .as_bytes()
                .first()
                .is_some_and(u8::is_ascii_uppercase);
            Known::Unknown { class_like }
        }
    };
    Ok(Global {
        module: module_n.to_string(),
        name: name.to_string(),
        kind,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Arena -> Value
// ---------------------------------------------------------------------------------------------------------------

struct Converter<'v, 'a, 'l> {
    vm: &'v Vm<'a, 'l>,
    nodes_left: usize,
    node_cap: usize,
    bytes_left: usize,
    byte_cap: usize,
    max_depth: usize,
}

impl<'a> Converter<'_, 'a, '_> {
    fn err(&self, kind: PickleErrorKind) -> PickleError {
        self.vm.err(kind)
    }

    fn value(&mut self, item: Item<'a>, depth: usize) -> Result<Value<'a>, PickleError> {
        if depth > self.max_depth {
            return Err(self.err(PickleErrorKind::Limit {
                what: "nesting depth of the value tree (or a reference cycle)",
                limit: self.max_depth,
            }));
        }
        if self.nodes_left == 0 {
            return Err(self.err(PickleErrorKind::Limit {
                what: "number of values in the tree (shared values count each time they appear)",
                limit: self.node_cap,
            }));
        }
        self.nodes_left -= 1;
        Ok(match item {
            Item::None => Value::None,
            Item::Bool(b) => Value::Bool(b),
            Item::Int(i) => Value::Int(i),
            Item::BigInt(b) => Value::BigInt(Cow::Borrowed(b)),
            Item::Float(f) => Value::Float(f),
            Item::Str(s) => Value::Str(Cow::Borrowed(s)),
            Item::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
            Item::Ref(i) => {
                let Some(obj) = self.vm.arena.get(i) else {
                    return Err(self.err(PickleErrorKind::StackUnderflow));
                };
                match obj {
                    Obj::List(items) => Value::List(self.values(items, depth)?),
                    Obj::Tuple(items) => Value::Tuple(self.values(items, depth)?),
                    Obj::Set(items) => Value::Set(self.values(items, depth)?),
                    Obj::Dict(entries) => {
                        let mut out = Vec::with_capacity(entries.len().min(self.nodes_left));
                        for &(k, v) in entries {
                            out.push((self.value(k, depth + 1)?, self.value(v, depth + 1)?));
                        }
                        Value::Dict(out)
                    }
                    Obj::OwnedBytes(b) => Value::Bytes(Cow::Owned(self.copy_bytes(b)?)),
                    Obj::Global(g) => {
                        self.charge(g.module.len() + g.name.len())?;
                        Value::Global(Box::new(GlobalRef {
                            module: g.module.clone(),
                            name: g.name.clone(),
                        }))
                    }
                    Obj::Dtype(d) => Value::Dtype(*d),
                    Obj::Array(a) => {
                        let data = match a.data {
                            Data::Borrowed(b) => Cow::Borrowed(b),
                            Data::Owned(j) => match self.vm.arena.get(j) {
                                Some(Obj::OwnedBytes(b)) => Cow::Owned(self.copy_bytes(b)?),
                                _ => Cow::Borrowed(&[][..]),
                            },
                        };
                        Value::Array(Box::new(NdArray {
                            dtype: a.dtype,
                            shape: a.shape.clone(),
                            fortran_order: a.fortran,
                            numpy_scalar: a.scalar,
                            data,
                        }))
                    }
                    Obj::Object(o) => {
                        let (module, name) = match self.vm.arena.get(o.global) {
                            Some(Obj::Global(g)) => {
                                self.charge(g.module.len() + g.name.len())?;
                                (g.module.clone(), g.name.clone())
                            }
                            _ => (String::new(), String::new()),
                        };
                        let args = self.values(&o.args, depth)?;
                        let mut kwargs = Vec::with_capacity(o.kwargs.len().min(self.nodes_left));
                        for &(k, v) in &o.kwargs {
                            kwargs.push((self.value(k, depth + 1)?, self.value(v, depth + 1)?));
                        }
                        let state = match o.state {
                            Some(s) => Some(self.value(s, depth + 1)?),
                            None => None,
                        };
                        Value::Object(Box::new(PyObject {
                            module,
                            name,
                            args,
                            kwargs,
                            state,
                        }))
                    }
                }
            }
        })
    }

    fn values(&mut self, items: &[Item<'a>], depth: usize) -> Result<Vec<Value<'a>>, PickleError> {
        let mut out = Vec::with_capacity(items.len().min(self.nodes_left));
        for &it in items {
            out.push(self.value(it, depth + 1)?);
        }
        Ok(out)
    }

    fn charge(&mut self, n: usize) -> Result<(), PickleError> {
        if n > self.bytes_left {
            return Err(self.err(PickleErrorKind::Limit {
                what: "bytes copied while building the value tree",
                limit: self.byte_cap,
            }));
        }
        self.bytes_left -= n;
        Ok(())
    }

    fn copy_bytes(&mut self, b: &[u8]) -> Result<Vec<u8>, PickleError> {
        self.charge(b.len())?;
        Ok(b.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny pickle assembler for tests.
    #[derive(Default)]
    struct P(Vec<u8>);

    impl P {
        fn proto(mut self, v: u8) -> Self {
            self.0.extend([PROTO, v]);
            self
        }
        fn op(mut self, o: u8) -> Self {
            self.0.push(o);
            self
        }
        fn s(mut self, s: &str) -> Self {
            self.0.push(SHORT_BINUNICODE);
            self.0.push(s.len() as u8);
            self.0.extend(s.as_bytes());
            self
        }
        fn b(mut self, b: &[u8]) -> Self {
            self.0.push(BINBYTES);
            self.0.extend((b.len() as u32).to_le_bytes());
            self.0.extend(b);
            self
        }
        fn i(mut self, v: i32) -> Self {
            self.0.push(BININT);
            self.0.extend(v.to_le_bytes());
            self
        }
        fn global(mut self, m: &str, n: &str) -> Self {
            self.0.push(GLOBAL);
            self.0.extend(format!("{m}\n{n}\n").as_bytes());
            self
        }
        fn stack_global(self, m: &str, n: &str) -> Self {
            self.s(m).s(n).op(STACK_GLOBAL)
        }
        fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend(b);
            self
        }
        fn stop(self) -> Vec<u8> {
            self.op(STOP).0
        }
    }

    fn f32_dtype(p: P, endian: &str) -> P {
        p.stack_global("numpy", "dtype")
            .s("f4")
            .op(NEWFALSE)
            .op(NEWTRUE)
            .op(TUPLE3)
            .op(REDUCE)
            .op(MARK)
            .i(3)
            .s(endian)
            .op(NONE)
            .op(NONE)
            .op(NONE)
            .i(-1)
            .i(-1)
            .i(0)
            .op(TUPLE)
            .op(BUILD)
    }

    fn array(shape: &[i32], fortran: bool, endian: &str, data: &[u8]) -> Vec<u8> {
        let mut p = P::default()
            .proto(4)
            .stack_global("numpy._core.multiarray", "_reconstruct")
            .stack_global("numpy", "ndarray")
            .i(0)
            .op(TUPLE1)
            .b(b"b")
            .op(TUPLE3)
            .op(REDUCE)
            .op(MARK)
            .i(1)
            .op(MARK);
        for &d in shape {
            p = p.i(d);
        }
        p = p.op(TUPLE);
        p = f32_dtype(p, endian);
        p.op(if fortran { NEWTRUE } else { NEWFALSE })
            .b(data)
            .op(TUPLE)
            .op(BUILD)
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
            .op(EMPTY_DICT)
            .op(MEMOIZE)
            .op(MARK)
            .s("a")
            .i(-7)
            .s("b")
            .raw(&[LONG1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1])
            .s("c")
            .op(BINFLOAT)
            .raw(&1.5f64.to_be_bytes())
            .s("d")
            .op(NONE)
            .op(NEWTRUE)
            .op(TUPLE2)
            .s("e")
            .op(EMPTY_LIST)
            .i(1)
            .op(APPEND)
            .op(MARK)
            .i(2)
            .i(3)
            .op(APPENDS)
            .s("f")
            .raw(&[LONG1, 2, 0xff, 0xff])
            .op(SETITEMS)
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
            .op(EMPTY_DICT)
            .op(MEMOIZE)
            .op(POP)
            .op(EMPTY_LIST)
            .raw(&[BINGET, 0])
            .op(APPEND)
            .raw(&[BINGET, 0])
            .s("k")
            .i(1)
            .op(SETITEM)
            .op(TUPLE2)
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
            .flat_map(|i| {
                (0..3).flat_map(move |j| (0..4).map(move |k| (100 * i + 10 * j + k) as i64))
            })
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
                let data = p.s("echo pwned").op(TUPLE1).op(REDUCE).stop();
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
            .op(EMPTY_TUPLE)
            .op(REDUCE)
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
            .op(EMPTY_TUPLE)
            .op(NEWOBJ)
            .stack_global("optax._src.transform", "ScaleByAdamState")
            .i(5)
            .op(TUPLE1)
            .op(REDUCE)
            .op(EMPTY_DICT)
            .s("x")
            .i(1)
            .op(SETITEM)
            .op(BUILD)
            .op(TUPLE2)
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
            .op(EMPTY_TUPLE)
            .op(REDUCE)
            .s("k")
            .global("_codecs", "encode")
            .s("a\u{ff}")
            .s("latin1")
            .op(TUPLE2)
            .op(REDUCE)
            .op(SETITEM)
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
            .op(EMPTY_LIST)
            .op(MEMOIZE)
            .raw(&[BINGET, 0])
            .op(APPEND)
            .stop();
        let e = parse(&data).unwrap_err();
        assert!(matches!(e.kind, PickleErrorKind::Limit { .. }), "{e}");
    }

    #[test]
    fn billion_laughs_is_bounded() {
        // t0 = (1,); t_{k+1} = (t_k, t_k) via the memo, 60 levels: 2^60 leaves if expanded.
        let mut p = P::default().proto(4).i(1).op(TUPLE1).op(MEMOIZE);
        for k in 0..60u8 {
            p = p.raw(&[BINGET, k, BINGET, k]).op(TUPLE2).op(MEMOIZE);
        }
        let data = p.stop();
        let e = parse(&data).unwrap_err();
        assert!(matches!(e.kind, PickleErrorKind::Limit { .. }), "{e}");
    }

    #[test]
    fn pops_never_cross_a_mark() {
        let data = P::default().proto(4).i(1).op(MARK).op(TUPLE1).stop();
        let e = parse(&data).unwrap_err();
        assert_eq!(e.kind, PickleErrorKind::StackUnderflow);
        assert_eq!(e.opcode, "TUPLE1");
    }

    #[test]
    fn truncation_and_declared_lengths() {
        let e = parse(&[PROTO, 4, NONE]).unwrap_err();
        assert_eq!(e.kind, PickleErrorKind::NoStop);
        let mut data = vec![PROTO, 4, BINBYTES8];
        data.extend(u64::MAX.to_le_bytes());
        data.push(STOP);
        let e = parse(&data).unwrap_err();
        assert!(matches!(e.kind, PickleErrorKind::Truncated { .. }), "{e}");
        assert_eq!(e.offset, 2);
        let mut data = vec![PROTO, 4, FRAME];
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
        .op(TUPLE2)
        .op(REDUCE)
        .stop();
        let v = parse(&data).unwrap();
        let a = v.as_array().unwrap();
        assert!(a.numpy_scalar && a.shape.is_empty());
        assert_eq!(a.to_f32_vec().unwrap(), vec![2.5]);

        let p = P::default()
            .proto(5)
            .stack_global("numpy._core.numeric", "_frombuffer")
            .op(MARK)
            .raw(&[BYTEARRAY8])
            .raw(&8u64.to_le_bytes())
            .raw(&f32_bytes(&[1.0, 2.0], false));
        let data = f32_dtype(p, "<")
            .i(2)
            .op(TUPLE1)
            .s("C")
            .op(TUPLE)
            .op(REDUCE)
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
}
