//! Converting the machine's arena into the public [`Value`] tree, with the tree's size, depth and copied bytes
//! capped.

use std::borrow::Cow;

use super::values::{GlobalRef, NdArray, PyObject, Value};
use super::vm::{Data, Item, Obj, Vm};
use super::{PickleError, PickleErrorKind};

pub(super) struct Converter<'v, 'a, 'l> {
    pub(super) vm: &'v Vm<'a, 'l>,
    pub(super) nodes_left: usize,
    pub(super) node_cap: usize,
    pub(super) bytes_left: usize,
    pub(super) byte_cap: usize,
    pub(super) max_depth: usize,
}

impl<'a> Converter<'_, 'a, '_> {
    fn err(&self, kind: PickleErrorKind) -> PickleError {
        self.vm.err(kind)
    }

    pub(super) fn value(&mut self, item: Item<'a>, depth: usize) -> Result<Value<'a>, PickleError> {
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
