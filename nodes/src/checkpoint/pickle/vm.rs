//! The pickle virtual machine: stack and memo slots, the object arena, reading the input and the opcode loop.
//! What the calls (`REDUCE`, `NEWOBJ`, `BUILD`) do is in `calls`.

use std::collections::HashMap;

use super::globals::{classify_global, Global};
use super::opcode::{opcode_name, OpCode};
use super::values::NpDtype;
use super::{Limits, PickleError, PickleErrorKind};

/// A stack/memo slot: scalars inline, everything mutable or large in the arena (so sharing and cycles are cheap and
/// mutation through the memo works as in Python).
#[derive(Debug, Clone, Copy)]
pub(super) enum Item<'a> {
    None,
    Bool(bool),
    Int(i64),
    BigInt(&'a [u8]),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    Ref(usize),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Data<'a> {
    Borrowed(&'a [u8]),
    /// An arena `OwnedBytes` object.
    Owned(usize),
}

#[derive(Debug)]
pub(super) struct ArrayObj<'a> {
    pub(super) dtype: NpDtype,
    pub(super) shape: Vec<usize>,
    pub(super) fortran: bool,
    pub(super) scalar: bool,
    pub(super) data: Data<'a>,
}

#[derive(Debug)]
pub(super) struct ObjectObj<'a> {
    pub(super) global: usize,
    pub(super) args: Vec<Item<'a>>,
    pub(super) kwargs: Vec<(Item<'a>, Item<'a>)>,
    pub(super) state: Option<Item<'a>>,
}

#[derive(Debug)]
pub(super) enum Obj<'a> {
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
    pub(super) fn type_name(&self) -> &'static str {
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

pub(super) type Res<T> = Result<T, PickleErrorKind>;

pub(super) struct Vm<'a, 'l> {
    pub(super) data: &'a [u8],
    pos: usize,
    op_start: usize,
    pub(super) op: u8,
    stack: Vec<Item<'a>>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item<'a>>,
    pub(super) arena: Vec<Obj<'a>>,
    pub(super) owned_bytes: usize,
    pub(super) copied_items: usize,
    limits: &'l Limits,
}

pub(super) fn wrong(expected: &'static str, found: &'static str) -> PickleErrorKind {
    PickleErrorKind::WrongType { expected, found }
}

pub(super) fn bad_call(callable: &str, detail: impl Into<String>) -> PickleErrorKind {
    PickleErrorKind::BadCall {
        callable: callable.to_string(),
        detail: detail.into(),
    }
}

impl<'a, 'l> Vm<'a, 'l> {
    pub(super) fn new(data: &'a [u8], limits: &'l Limits) -> Self {
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

    pub(super) fn err(&self, kind: PickleErrorKind) -> PickleError {
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

    pub(super) fn utf8(bytes: &'a [u8]) -> Res<&'a str> {
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

    pub(super) fn alloc(&mut self, obj: Obj<'a>) -> Res<Item<'a>> {
        if self.arena.len() >= self.limits.max_objects {
            return Err(PickleErrorKind::Limit {
                what: "number of objects",
                limit: self.limits.max_objects,
            });
        }
        self.arena.push(obj);
        Ok(Item::Ref(self.arena.len() - 1))
    }

    pub(super) fn obj(&self, item: Item<'a>) -> Option<&Obj<'a>> {
        match item {
            Item::Ref(i) => self.arena.get(i),
            _ => None,
        }
    }

    pub(super) fn item_type(&self, item: Item<'a>) -> &'static str {
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

    pub(super) fn charge_owned(&mut self, n: usize) -> Res<()> {
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

    pub(super) fn run(&mut self) -> Result<Item<'a>, PickleError> {
        loop {
            self.op_start = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                self.op = OpCode::Stop.byte();
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

    fn step(&mut self, byte: u8) -> Res<Option<Item<'a>>> {
        let Some(op) = OpCode::from_byte(byte) else {
            return Err(PickleErrorKind::UnknownOpcode(byte));
        };
        match op {
            OpCode::Proto => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(PickleErrorKind::UnsupportedProtocol(p));
                }
            }
            OpCode::Frame => {
                let n = self.u64()?;
                if n > self.remaining() as u64 {
                    return Err(PickleErrorKind::Truncated {
                        needed: n,
                        available: self.remaining(),
                    });
                }
            }
            OpCode::Stop => return self.pop().map(Some),
            OpCode::Mark => {
                if self.marks.len() >= self.limits.max_marks {
                    return Err(PickleErrorKind::Limit {
                        what: "MARK nesting depth",
                        limit: self.limits.max_marks,
                    });
                }
                self.marks.push(self.stack.len());
            }
            OpCode::Pop => {
                if self.stack.len() > self.base() {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            OpCode::PopMark => {
                self.pop_mark()?;
            }
            OpCode::Dup => {
                let t = self.top()?;
                self.push(t)?;
            }
            OpCode::None => self.push(Item::None)?,
            OpCode::NewTrue => self.push(Item::Bool(true))?,
            OpCode::NewFalse => self.push(Item::Bool(false))?,
            OpCode::BinInt => {
                let v = self.i32()?;
                self.push(Item::Int(i64::from(v)))?
            }
            OpCode::BinInt1 => {
                let v = self.u8()?;
                self.push(Item::Int(i64::from(v)))?
            }
            OpCode::BinInt2 => {
                let v = self.u16()?;
                self.push(Item::Int(i64::from(v)))?
            }
            OpCode::Long1 => {
                let n = self.u8()?;
                let b = self.take(u64::from(n))?;
                self.push(long_item(b))?
            }
            OpCode::Long4 => {
                let n = self.i32()?;
                let n = u64::try_from(n).map_err(|_| bad_call("LONG4", "negative byte count"))?;
                let b = self.take(n)?;
                self.push(long_item(b))?
            }
            OpCode::Int => {
                let s = self.line()?;
                let item = match s {
                    "00" => Item::Bool(false),
                    "01" => Item::Bool(true),
                    _ => Item::Int(parse_text_int(s)?),
                };
                self.push(item)?
            }
            OpCode::Long => {
                let s = self.line()?;
                let s = s.strip_suffix('L').unwrap_or(s);
                let v = parse_text_int(s)?;
                self.push(Item::Int(v))?
            }
            OpCode::Float => {
                let s = self.line()?;
                let v: f64 = s
                    .trim()
                    .parse()
                    .map_err(|_| PickleErrorKind::BadText(format!("not a float: {s:?}")))?;
                self.push(Item::Float(v))?
            }
            OpCode::BinFloat => {
                let v = f64::from_be_bytes(self.take_array()?);
                self.push(Item::Float(v))?
            }
            OpCode::ShortBinUnicode => {
                let n = self.u8()?;
                let s = Self::utf8(self.take(u64::from(n))?)?;
                self.push(Item::Str(s))?
            }
            OpCode::BinUnicode => {
                let n = self.u32()?;
                let s = Self::utf8(self.take(u64::from(n))?)?;
                self.push(Item::Str(s))?
            }
            OpCode::BinUnicode8 => {
                let n = self.u64()?;
                let s = Self::utf8(self.take(n)?)?;
                self.push(Item::Str(s))?
            }
            OpCode::ShortBinString | OpCode::BinString => {
                let n = if op == OpCode::ShortBinString {
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
            OpCode::ShortBinBytes => {
                let n = self.u8()?;
                let b = self.take(u64::from(n))?;
                self.push(Item::Bytes(b))?
            }
            OpCode::BinBytes => {
                let n = self.u32()?;
                let b = self.take(u64::from(n))?;
                self.push(Item::Bytes(b))?
            }
            OpCode::BinBytes8 | OpCode::ByteArray8 => {
                let n = self.u64()?;
                let b = self.take(n)?;
                self.push(Item::Bytes(b))?
            }
            OpCode::NextBuffer => return Err(PickleErrorKind::Unsupported(
                "out-of-band buffers (protocol 5 NEXT_BUFFER) are not supported; pickle in-band"
                    .into(),
            )),
            OpCode::ReadonlyBuffer => {
                self.top()?;
            }
            OpCode::EmptyDict => {
                let it = self.alloc(Obj::Dict(Vec::new()))?;
                self.push(it)?
            }
            OpCode::EmptyList => {
                let it = self.alloc(Obj::List(Vec::new()))?;
                self.push(it)?
            }
            OpCode::EmptyTuple => {
                let it = self.alloc(Obj::Tuple(Vec::new()))?;
                self.push(it)?
            }
            OpCode::EmptySet => {
                let it = self.alloc(Obj::Set(Vec::new()))?;
                self.push(it)?
            }
            OpCode::Tuple1 | OpCode::Tuple2 | OpCode::Tuple3 => {
                let n = match op {
                    OpCode::Tuple1 => 1,
                    OpCode::Tuple2 => 2,
                    _ => 3,
                };
                if self.stack.len() < self.base() + n {
                    return Err(PickleErrorKind::StackUnderflow);
                }
                let items = self.stack.split_off(self.stack.len() - n);
                let it = self.alloc(Obj::Tuple(items))?;
                self.push(it)?
            }
            OpCode::Tuple => {
                let items = self.pop_mark()?;
                let it = self.alloc(Obj::Tuple(items))?;
                self.push(it)?
            }
            OpCode::List => {
                let items = self.pop_mark()?;
                let it = self.alloc(Obj::List(items))?;
                self.push(it)?
            }
            OpCode::Dict => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                let it = self.alloc(Obj::Dict(pairs))?;
                self.push(it)?
            }
            OpCode::FrozenSet => {
                let items = self.pop_mark()?;
                let it = self.alloc(Obj::Set(items))?;
                self.push(it)?
            }
            OpCode::Append => {
                let v = self.pop()?;
                let target = self.top()?;
                self.extend_list(target, vec![v])?;
            }
            OpCode::Appends => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.extend_list(target, items)?;
            }
            OpCode::SetItem => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?;
                self.extend_dict(target, vec![(k, v)])?;
            }
            OpCode::SetItems => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.extend_dict(target, pairs(items)?)?;
            }
            OpCode::AddItems => {
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
            OpCode::Memoize => {
                let t = self.top()?;
                let idx = self.memo.len() as u64;
                self.memo_put(idx, t)?;
            }
            OpCode::BinPut => {
                let idx = self.u8()?;
                let t = self.top()?;
                self.memo_put(u64::from(idx), t)?;
            }
            OpCode::LongBinPut => {
                let idx = self.u32()?;
                let t = self.top()?;
                self.memo_put(u64::from(idx), t)?;
            }
            OpCode::Put => {
                let s = self.line()?;
                let idx = parse_text_index(s)?;
                let t = self.top()?;
                self.memo_put(idx, t)?;
            }
            OpCode::BinGet => {
                let idx = self.u8()?;
                self.memo_get(u64::from(idx))?;
            }
            OpCode::LongBinGet => {
                let idx = self.u32()?;
                self.memo_get(u64::from(idx))?;
            }
            OpCode::Get => {
                let s = self.line()?;
                let idx = parse_text_index(s)?;
                self.memo_get(idx)?;
            }
            OpCode::Global => {
                let module = self.line()?;
                let name = self.line()?;
                let g = classify_global(module, name)?;
                let it = self.alloc(Obj::Global(Box::new(g)))?;
                self.push(it)?
            }
            OpCode::StackGlobal => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Item::Str(module), Item::Str(name)) = (module, name) else {
                    return Err(wrong("two strings (module, name)", self.item_type(module)));
                };
                let g = classify_global(module, name)?;
                let it = self.alloc(Obj::Global(Box::new(g)))?;
                self.push(it)?
            }
            OpCode::Reduce => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let args = self.tuple_items(args, "a tuple of REDUCE arguments")?;
                let it = self.call(callable, args)?;
                self.push(it)?
            }
            OpCode::NewObj => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.tuple_items(args, "a tuple of NEWOBJ arguments")?;
                let it = self.new_object(cls, args, Vec::new())?;
                self.push(it)?
            }
            OpCode::NewObjEx => {
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
            OpCode::Build => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)?;
            }
            OpCode::PersId | OpCode::BinPersId => {
                return Err(PickleErrorKind::Unsupported(
                    "persistent ids (torch-style external storages) are not supported".into(),
                ))
            }
            OpCode::Ext1 | OpCode::Ext2 | OpCode::Ext4 => {
                return Err(PickleErrorKind::Unsupported(
                    "the copyreg extension registry is not supported".into(),
                ))
            }
            OpCode::Inst | OpCode::Obj => {
                return Err(PickleErrorKind::Unsupported(
                    "protocol 0/1 instance opcodes are not supported (use protocol 2 or later)"
                        .into(),
                ))
            }
            OpCode::String | OpCode::Unicode => {
                return Err(PickleErrorKind::Unsupported(
                    "protocol 0 quoted strings are not supported (use protocol 2 or later)".into(),
                ))
            }
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
pub(super) fn long_item(b: &[u8]) -> Item<'_> {
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
