//! Values that cross the plugin boundary: scalars, tensors as bytes, opaque handles.

use std::borrow::Cow;
use std::fmt;

use abi_stable::{
    sabi_trait,
    std_types::{RArc, RBox, RString, RVec},
    StableAbi,
};

use crate::error::NodeError;

/// Element type of a [`TensorBuf`]. Data is always little-endian, contiguous, row-major.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float (ComfyUI's IMAGE and LATENT use this).
    F32 = 0,
    /// 16-bit IEEE float.
    F16 = 1,
    /// bfloat16.
    BF16 = 2,
    /// 64-bit IEEE float.
    F64 = 3,
    /// Unsigned byte (e.g. 8-bit pixels).
    U8 = 4,
    /// 64-bit signed integer.
    I64 = 5,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 | DType::I64 => 8,
            DType::U8 => 1,
        }
    }

    /// Lower-case name, as used in error messages (`"f32"`, `"bf16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::U8 => "u8",
            DType::I64 => "i64",
        }
    }
}

/// A host-visible tensor: element type, shape and the raw bytes (little-endian, row-major).
///
/// This is how LATENT and IMAGE values cross the boundary. ComfyUI conventions: IMAGE is
/// `[B, H, W, C]` f32 in `0..=1` (channels-last), LATENT is `[B, C, H, W]` f32.
/// Inside a [`Value`] the buffer sits behind an `RArc`, so routing it to several downstream
/// nodes and caching it never copies the bytes; the only copies are the plugin's own
/// conversions to and from its tensor library.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct TensorBuf {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: RVec<u64>,
    /// `numel * dtype.size_in_bytes()` bytes.
    pub data: RVec<u8>,
}

impl TensorBuf {
    /// Builds a tensor from raw bytes, checking that the byte length matches the shape.
    pub fn new(dtype: DType, shape: &[u64], data: RVec<u8>) -> Result<Self, NodeError> {
        let t = TensorBuf {
            dtype,
            shape: shape.iter().copied().collect(),
            data,
        };
        t.check()?;
        Ok(t)
    }

    /// A zero-filled tensor.
    pub fn zeros(dtype: DType, shape: &[u64]) -> Result<Self, NodeError> {
        let n = numel_of(shape)?;
        let bytes = n
            .checked_mul(dtype.size_in_bytes() as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| NodeError::failed(format!("tensor of shape {shape:?} is too large")))?;
        Ok(TensorBuf {
            dtype,
            shape: shape.iter().copied().collect(),
            data: RVec::from(vec![0u8; bytes]),
        })
    }

    /// Builds an f32 tensor from values (one copy: `values` into the byte buffer).
    pub fn from_f32(shape: &[u64], values: &[f32]) -> Result<Self, NodeError> {
        let n = numel_of(shape)?;
        if n != values.len() as u64 {
            return Err(NodeError::failed(format!(
                "shape {shape:?} needs {n} values, got {}",
                values.len()
            )));
        }
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Ok(TensorBuf {
            dtype: DType::F32,
            shape: shape.iter().copied().collect(),
            data: RVec::from(data),
        })
    }

    /// Number of elements (product of the shape; 1 for a scalar shape `[]`).
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Shape as a `Vec<usize>`, convenient for tensor libraries.
    pub fn dims(&self) -> Vec<usize> {
        self.shape.iter().map(|&d| d as usize).collect()
    }

    /// Checks that the data length equals `numel * dtype size`.
    pub fn check(&self) -> Result<(), NodeError> {
        let n = numel_of(&self.shape)?;
        let want = n.checked_mul(self.dtype.size_in_bytes() as u64);
        if want != Some(self.data.len() as u64) {
            return Err(NodeError::failed(format!(
                "tensor {} {:?} should hold {} bytes but holds {}",
                self.dtype.name(),
                self.shape.as_slice(),
                want.map_or("too many".to_string(), |w| w.to_string()),
                self.data.len()
            )));
        }
        Ok(())
    }

    /// The values as f32: borrowed when the buffer is aligned (the usual case), copied otherwise.
    /// Errors when the dtype is not F32 or the byte length is wrong.
    pub fn f32_values(&self) -> Result<Cow<'_, [f32]>, NodeError> {
        if self.dtype != DType::F32 {
            return Err(NodeError::failed(format!(
                "expected an f32 tensor, got {}",
                self.dtype.name()
            )));
        }
        self.check()?;
        #[cfg(target_endian = "little")]
        {
            // SAFETY: every bit pattern is a valid f32; align_to only yields the aligned middle.
            let (head, mid, tail) = unsafe { self.data.as_slice().align_to::<f32>() };
            if head.is_empty() && tail.is_empty() {
                return Ok(Cow::Borrowed(mid));
            }
        }
        Ok(Cow::Owned(
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    /// Mutable f32 view of the data when the dtype is F32 and the buffer is aligned
    /// (lets a plugin fill a [`TensorBuf::zeros`] buffer in place, without an extra copy).
    pub fn f32_values_mut(&mut self) -> Option<&mut [f32]> {
        if self.dtype != DType::F32 || self.check().is_err() || cfg!(target_endian = "big") {
            return None;
        }
        // SAFETY: every bit pattern is a valid f32; align_to only yields the aligned middle.
        let (head, mid, tail) = unsafe { self.data.as_mut_slice().align_to_mut::<f32>() };
        if head.is_empty() && tail.is_empty() {
            Some(mid)
        } else {
            None
        }
    }
}

fn numel_of(shape: &[u64]) -> Result<u64, NodeError> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NodeError::failed(format!("tensor shape {shape:?} overflows")))
}

/// The erased object behind a [`Handle`]. Plugins don't implement this directly;
/// [`Handle::new`] wraps any `Send + Sync + 'static` value.
#[sabi_trait]
pub trait OpaqueObject: Send + Sync {
    /// A short description for logs and error messages (the Rust type name by default).
    #[sabi(last_prefix_field)]
    fn describe(&self) -> RString;
}

struct Holder<T>(T);

impl<T: Send + Sync + 'static> OpaqueObject for Holder<T> {
    fn describe(&self) -> RString {
        RString::from(std::any::type_name::<T>())
    }
}

/// A type-erased, plugin-owned object behind a trait object (`OpaqueObject_TO`).
pub type OpaqueBox = OpaqueObject_TO<'static, RBox<()>>;

/// An opaque, reference-counted handle to a plugin-owned object (MODEL, VAE, ...).
///
/// The host only routes, caches and drops handles; it never looks inside. The object's
/// memory (including GPU memory) stays with the plugin and is freed — by the plugin's own
/// code — when the last clone of the handle is dropped (e.g. when the host frees its cache).
/// Only the library that created a handle can downcast it.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct Handle {
    type_name: RString,
    obj: RArc<OpaqueBox>,
}

impl Handle {
    /// Wraps `value` as a handle of socket type `type_name` (e.g. `"MODEL"`).
    pub fn new<T: Send + Sync + 'static>(type_name: &str, value: T) -> Self {
        let obj =
            OpaqueObject_TO::from_value(Holder(value), abi_stable::sabi_trait::TD_CanDowncast);
        Handle {
            type_name: RString::from(type_name),
            obj: RArc::new(obj),
        }
    }

    /// The socket type the handle was created for.
    pub fn type_name(&self) -> &str {
        self.type_name.as_str()
    }

    /// Borrows the wrapped value if it is a `T` created by this same library.
    pub fn downcast_ref<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.obj.obj.downcast_as::<Holder<T>>().ok().map(|h| &h.0)
    }

    /// The object's description (its Rust type name unless the plugin says otherwise).
    pub fn describe(&self) -> String {
        self.obj.describe().into_string()
    }

    /// Whether both handles point to the same object.
    pub fn ptr_eq(&self, other: &Handle) -> bool {
        std::ptr::eq(&*self.obj, &*other.obj)
    }

    /// How many clones of this handle exist (host cache + in-flight inputs + plugin copies).
    pub fn strong_count(&self) -> usize {
        RArc::strong_count(&self.obj)
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({}: {})", self.type_name, self.describe())
    }
}

/// A value passed to or returned from a node.
///
/// Widget types map to `Int` (INT; seeds above `i64::MAX` arrive bit-cast, read them with
/// [`crate::Inputs::u64`]), `Float` (FLOAT), `Str` (STRING and combo choices), `Bool`
/// (BOOLEAN). Tensors (IMAGE, LATENT, MASK, ...) travel as [`TensorBuf`] behind an `RArc`;
/// heavy plugin objects as [`Handle`]s; anything else (literal lists given as
/// `{"__value__": [...]}`, inputs of type `*`) as JSON text.
#[repr(u8)]
#[derive(StableAbi, Clone, Debug)]
pub enum Value {
    /// INT.
    Int(i64),
    /// FLOAT.
    Float(f64),
    /// STRING, or a combo choice.
    Str(RString),
    /// BOOLEAN.
    Bool(bool),
    /// A tensor (IMAGE, LATENT, ...), shared without copying.
    Tensor(RArc<TensorBuf>),
    /// An opaque plugin-owned object (MODEL, VAE, ...).
    Handle(Handle),
    /// Any other JSON value, as text.
    Json(RString),
}

impl Value {
    /// A short name of the variant (`"INT"`, `"FLOAT"`, `"STRING"`, `"BOOLEAN"`, `"TENSOR"`,
    /// the handle's type name, or `"JSON"`), for messages.
    pub fn kind_name(&self) -> &str {
        match self {
            Value::Int(_) => "INT",
            Value::Float(_) => "FLOAT",
            Value::Str(_) => "STRING",
            Value::Bool(_) => "BOOLEAN",
            Value::Tensor(_) => "TENSOR",
            Value::Handle(h) => h.type_name(),
            Value::Json(_) => "JSON",
        }
    }

    /// Wraps a tensor buffer.
    pub fn tensor(t: TensorBuf) -> Self {
        Value::Tensor(RArc::new(t))
    }

    /// Converts to JSON for display (tensors become `{"dtype","shape"}`, handles
    /// `{"handle": type}`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Value::Int(i) => json!(i),
            Value::Float(f) => json!(f),
            Value::Str(s) => json!(s.as_str()),
            Value::Bool(b) => json!(b),
            Value::Tensor(t) => json!({"dtype": t.dtype.name(), "shape": t.shape.as_slice()}),
            Value::Handle(h) => json!({"handle": h.type_name()}),
            Value::Json(s) => serde_json::from_str(s.as_str()).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(RString::from(v))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(RString::from(v))
    }
}
impl From<TensorBuf> for Value {
    fn from(v: TensorBuf) -> Self {
        Value::tensor(v)
    }
}
impl From<RArc<TensorBuf>> for Value {
    fn from(v: RArc<TensorBuf>) -> Self {
        Value::Tensor(v)
    }
}
impl From<Handle> for Value {
    fn from(v: Handle) -> Self {
        Value::Handle(v)
    }
}

/// An input value with its input name.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct NamedValue {
    /// The input's name as declared in the node descriptor.
    pub name: RString,
    /// The value.
    pub value: Value,
}

impl NamedValue {
    /// Pairs a name with a value.
    pub fn new(name: &str, value: impl Into<Value>) -> Self {
        NamedValue {
            name: RString::from(name),
            value: value.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_roundtrip_and_shape_check() {
        let t = TensorBuf::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(t.numel(), 6);
        assert_eq!(&*t.f32_values().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(TensorBuf::from_f32(&[2, 2], &[1.0]).is_err());
        assert!(TensorBuf::new(DType::F32, &[2], RVec::from(vec![0u8; 7])).is_err());
        assert!(TensorBuf::zeros(DType::F32, &[u64::MAX, 4]).is_err());
    }

    #[test]
    fn zeros_fill_in_place() {
        let mut t = TensorBuf::zeros(DType::F32, &[4]).unwrap();
        if let Some(v) = t.f32_values_mut() {
            v.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
            assert_eq!(&*t.f32_values().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        }
    }

    #[test]
    fn handle_downcast_only_to_its_type() {
        let h = Handle::new("COUNTER", 41u32);
        assert_eq!(h.downcast_ref::<u32>(), Some(&41));
        assert_eq!(h.downcast_ref::<u64>(), None);
        let h2 = h.clone();
        assert!(h.ptr_eq(&h2));
        assert_eq!(h.strong_count(), 2);
        assert_eq!(h.type_name(), "COUNTER");
    }
}
