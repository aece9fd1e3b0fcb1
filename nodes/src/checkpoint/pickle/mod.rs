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
//!
//! # Layout
//!
//! [`parse`] runs the machine (`vm`: slots, arena, the opcode loop; `calls`: what `REDUCE`, `NEWOBJ` and `BUILD`
//! do), which classifies every global as it is named (`globals`), then converts the arena into the [`Value`] tree
//! (`convert`). The opcodes are the [`OpCode`] enum; the public value types live in `values`.

mod calls;
mod convert;
mod globals;
mod opcode;
mod values;
mod vm;

#[cfg(test)]
mod tests;

pub use globals::DENIED_MODULES;
pub use opcode::{opcode_name, OpCode};
pub use values::{
    checked_numel, ArrayError, ElemType, GlobalRef, NdArray, NpDtype, PyObject, Value,
};

use convert::Converter;
use vm::Vm;

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
    vm.op = OpCode::Stop.byte();
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
