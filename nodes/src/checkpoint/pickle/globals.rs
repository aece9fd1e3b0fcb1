//! Classification of the globals a pickle names (`GLOBAL`, `STACK_GLOBAL`): understood, refused or unknown (see
//! the policy in the module docs of [`super`]).

use super::vm::Res;
use super::PickleErrorKind;

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

/// What the reader makes of a global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
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

/// A classified global, as the machine holds it (Python 2 module names already mapped).
#[derive(Debug)]
pub(super) struct Global {
    pub(super) module: String,
    pub(super) name: String,
    pub(super) kind: Known,
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
pub(super) fn classify_global(module: &str, name: &str) -> Res<Global> {
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
