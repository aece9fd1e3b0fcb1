//! Conversions between Python objects, JSON and the contract's values: dicts/lists/scalars to and from
//! `serde_json::Value`, tensors to and from numpy arrays (one copy each way), handles to `odelt.Handle`.

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use odelt_host::odelt_contract::{DType, TensorBuf, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value as Json};

/// An opaque plugin object (MODEL, VAE, ...): the plugin's value stays alive while this object lives.
#[pyclass(module = "odelt", name = "Handle", frozen)]
pub struct PyHandle {
    pub(crate) handle: odelt_host::odelt_contract::Handle,
}

#[pymethods]
impl PyHandle {
    /// The socket type the plugin created it for (e.g. `"MODEL"`).
    #[getter]
    fn type_name(&self) -> String {
        self.handle.type_name().to_string()
    }

    /// The plugin's description of the object.
    fn describe(&self) -> String {
        self.handle.describe()
    }

    /// Whether both handles point to the same plugin object.
    fn same_object(&self, other: &Bound<'_, PyHandle>) -> bool {
        self.handle.ptr_eq(&other.get().handle)
    }

    fn __repr__(&self) -> String {
        format!(
            "<odelt.Handle {} ({})>",
            self.handle.type_name(),
            self.handle.describe()
        )
    }
}

/// Python object to JSON: None, bool, int (i64/u64), float, str, list/tuple, dict with str keys; numpy scalars
/// through `__index__`/`__float__`.
pub fn py_to_json(v: &Bound<'_, PyAny>) -> PyResult<Json> {
    if v.is_none() {
        return Ok(Json::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Json::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(Json::from(i));
        }
        if let Ok(u) = v.extract::<u64>() {
            return Ok(Json::from(u));
        }
        return Err(PyValueError::new_err(format!(
            "integer {v} does not fit in 64 bits"
        )));
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        let x = f.value();
        return Number::from_f64(x)
            .map(Json::Number)
            .ok_or_else(|| PyValueError::new_err(format!("{x} is not a finite number")));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Json::String(s.to_str()?.to_string()));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut m = Map::new();
        for (k, val) in d.iter() {
            let key = match k.cast::<PyString>() {
                Ok(s) => s.to_str()?.to_string(),
                Err(_) if k.is_instance_of::<PyInt>() => k.str()?.to_str()?.to_string(),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "dict keys must be strings, got {}",
                        k.get_type().name()?
                    )))
                }
            };
            m.insert(key, py_to_json(&val)?);
        }
        return Ok(Json::Object(m));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for item in v.try_iter()? {
            out.push(py_to_json(&item?)?);
        }
        return Ok(Json::Array(out));
    }
    // numpy scalars and other number-likes.
    if v.hasattr("__index__")? {
        let i = v.call_method0("__index__")?;
        return py_to_json(&i);
    }
    if v.hasattr("__float__")? {
        let f = v.call_method0("__float__")?;
        return py_to_json(&f);
    }
    Err(PyTypeError::new_err(format!(
        "cannot convert a {} to JSON",
        v.get_type().name()?
    )))
}

/// JSON to a Python object (dicts keep their order).
pub fn json_to_py<'py>(py: Python<'py>, v: &Json) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Json::Null => py.None().into_bound(py),
        Json::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Json::String(s) => PyString::new(py, s).into_any(),
        Json::Array(a) => {
            let l = PyList::empty(py);
            for item in a {
                l.append(json_to_py(py, item)?)?;
            }
            l.into_any()
        }
        Json::Object(m) => {
            let d = PyDict::new(py);
            for (k, item) in m {
                d.set_item(k, json_to_py(py, item)?)?;
            }
            d.into_any()
        }
    })
}

fn array_from_bytes<'py, T: numpy::Element + Copy>(
    py: Python<'py>,
    t: &TensorBuf,
    from_le: impl Fn(&[u8]) -> T,
) -> PyResult<Bound<'py, PyAny>> {
    let dims = t.dims();
    let arr = PyArrayDyn::<T>::zeros(py, dims, false);
    {
        // SAFETY: the array was just created here, is C-contiguous and nothing else references it yet.
        let dst = unsafe { arr.as_slice_mut() }
            .map_err(|e| PyValueError::new_err(format!("numpy array: {e}")))?;
        let size = std::mem::size_of::<T>();
        for (d, chunk) in dst.iter_mut().zip(t.data.as_slice().chunks_exact(size)) {
            *d = from_le(chunk);
        }
    }
    Ok(arr.into_any())
}

/// A tensor as a new numpy array of its dtype (one copy; f16/bf16 become float32).
pub fn tensor_to_numpy<'py>(py: Python<'py>, t: &TensorBuf) -> PyResult<Bound<'py, PyAny>> {
    t.check()
        .map_err(|e| PyValueError::new_err(e.message.to_string()))?;
    match t.dtype {
        DType::F32 => {
            let vals = t
                .f32_values()
                .map_err(|e| PyValueError::new_err(e.message.to_string()))?;
            let arr = PyArrayDyn::<f32>::zeros(py, t.dims(), false);
            // SAFETY: as above, a fresh contiguous array.
            unsafe { arr.as_slice_mut() }
                .map_err(|e| PyValueError::new_err(format!("numpy array: {e}")))?
                .copy_from_slice(&vals);
            Ok(arr.into_any())
        }
        DType::F64 => array_from_bytes::<f64>(py, t, |c| {
            f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))
        }),
        DType::I64 => array_from_bytes::<i64>(py, t, |c| {
            i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))
        }),
        DType::U8 => array_from_bytes::<u8>(py, t, |c| c[0]),
        DType::F16 => {
            array_from_bytes::<f32>(py, t, |c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        }
        DType::BF16 => array_from_bytes::<f32>(py, t, |c| {
            f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)
        }),
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// A numpy array (or anything `numpy.asarray` takes) as an f32 tensor: one copy into the tensor's buffer (plus
/// numpy's own conversion when the array is not already C-contiguous float32).
pub fn numpy_to_tensor(v: &Bound<'_, PyAny>) -> PyResult<TensorBuf> {
    let py = v.py();
    let np = py.import("numpy")?;
    let f32_dtype = np.getattr("float32")?;
    let arr = np.call_method1("ascontiguousarray", (v, f32_dtype))?;
    let arr = arr
        .cast_into::<PyArrayDyn<f32>>()
        .map_err(|e| PyTypeError::new_err(format!("expected a float32 array: {e}")))?;
    let ro = arr.readonly();
    let shape: Vec<u64> = ro.shape().iter().map(|&d| d as u64).collect();
    let slice = ro
        .as_slice()
        .map_err(|e| PyValueError::new_err(format!("numpy array: {e}")))?;
    let mut data = Vec::with_capacity(std::mem::size_of_val(slice));
    for x in slice {
        data.extend_from_slice(&x.to_le_bytes());
    }
    TensorBuf::new(DType::F32, &shape, data.into())
        .map_err(|e| PyValueError::new_err(e.message.to_string()))
}

/// Whether `v` looks like an array (numpy, or anything with the array interface: torch CPU tensors have
/// `__array__`).
pub fn is_array_like(v: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(v.hasattr("__array_interface__")? || v.hasattr("__array__")?)
}

/// A node value as a Python object: int, float, str, bool, numpy array, `odelt.Handle`, or parsed JSON.
pub fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Str(s) => PyString::new(py, s.as_str()).into_any(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Tensor(t) => tensor_to_numpy(py, t)?,
        Value::Handle(h) => Bound::new(py, PyHandle { handle: h.clone() })?.into_any(),
        Value::Json(s) => {
            let j: Json = serde_json::from_str(s.as_str()).unwrap_or(Json::Null);
            json_to_py(py, &j)?
        }
    })
}
