//! What the calls do: `REDUCE` (allow-listed callables, stubs of unknown classes), `NEWOBJ` / `NEWOBJ_EX` and
//! `BUILD`, with every argument checked.

use super::globals::{Global, Known};
use super::values::{checked_numel, ElemType, NpDtype};
use super::vm::{bad_call, wrong, ArrayObj, Data, Item, Obj, ObjectObj, Res, Vm};
use super::PickleErrorKind;

impl<'a> Vm<'a, '_> {
    /// A copy of a tuple's items (copies are charged against the input length).
    pub(super) fn tuple_items(
        &mut self,
        item: Item<'a>,
        expected: &'static str,
    ) -> Res<Vec<Item<'a>>> {
        let items = match self.obj(item) {
            Some(Obj::Tuple(t)) => t.clone(),
            _ => return Err(wrong(expected, self.item_type(item))),
        };
        self.charge_items(items.len())?;
        Ok(items)
    }

    /// Calls may copy containers that the memo shares; the total copied is capped by the input length so a short
    /// pickle cannot copy one big container over and over.
    pub(super) fn charge_items(&mut self, n: usize) -> Res<()> {
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
    pub(super) fn call(&mut self, callable: Item<'a>, args: Vec<Item<'a>>) -> Res<Item<'a>> {
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
    pub(super) fn new_object(
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
    pub(super) fn build(&mut self, target: Item<'a>, state: Item<'a>) -> Res<()> {
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

fn parse_dtype_str(qual: &str, s: &str) -> Res<NpDtype> {
    match ElemType::parse_numpy(s) {
        Some((elem, big_endian)) => Ok(NpDtype { elem, big_endian }),
        None => Err(bad_call(
            qual,
            format!("numpy dtype {s:?} is not supported (bool, ints, float16/32/64, bfloat16 are)"),
        )),
    }
}
