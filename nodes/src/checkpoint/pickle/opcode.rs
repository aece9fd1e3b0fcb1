//! The pickle opcodes (protocols 0–5), each with its byte and its `pickletools` name.

/// Declares [`OpCode`] from one table of `Variant = byte, "NAME"` rows, so the byte, the variant and the name can
/// never disagree.
macro_rules! opcodes {
    ($($(#[$doc:meta])* $variant:ident = $byte:literal, $name:literal;)*) => {
        /// A pickle opcode.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum OpCode {
            $($(#[$doc])* $variant = $byte,)*
        }

        impl OpCode {
            /// The opcode of a byte, `None` for a byte that is no opcode.
            pub fn from_byte(byte: u8) -> Option<OpCode> {
                match byte {
                    $($byte => Some(OpCode::$variant),)*
                    _ => None,
                }
            }

            /// The `pickletools` name (`BINUNICODE`, `STACK_GLOBAL`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $(OpCode::$variant => $name,)*
                }
            }
        }
    };
}

opcodes! {
    Mark = b'(', "MARK";
    Stop = b'.', "STOP";
    Pop = b'0', "POP";
    PopMark = b'1', "POP_MARK";
    Dup = b'2', "DUP";
    Float = b'F', "FLOAT";
    Int = b'I', "INT";
    BinInt = b'J', "BININT";
    BinInt1 = b'K', "BININT1";
    Long = b'L', "LONG";
    BinInt2 = b'M', "BININT2";
    None = b'N', "NONE";
    PersId = b'P', "PERSID";
    BinPersId = b'Q', "BINPERSID";
    Reduce = b'R', "REDUCE";
    String = b'S', "STRING";
    BinString = b'T', "BINSTRING";
    ShortBinString = b'U', "SHORT_BINSTRING";
    Unicode = b'V', "UNICODE";
    BinUnicode = b'X', "BINUNICODE";
    Append = b'a', "APPEND";
    Build = b'b', "BUILD";
    Global = b'c', "GLOBAL";
    Dict = b'd', "DICT";
    EmptyDict = b'}', "EMPTY_DICT";
    Appends = b'e', "APPENDS";
    Get = b'g', "GET";
    BinGet = b'h', "BINGET";
    Inst = b'i', "INST";
    LongBinGet = b'j', "LONG_BINGET";
    List = b'l', "LIST";
    EmptyList = b']', "EMPTY_LIST";
    Obj = b'o', "OBJ";
    Put = b'p', "PUT";
    BinPut = b'q', "BINPUT";
    LongBinPut = b'r', "LONG_BINPUT";
    SetItem = b's', "SETITEM";
    Tuple = b't', "TUPLE";
    EmptyTuple = b')', "EMPTY_TUPLE";
    SetItems = b'u', "SETITEMS";
    BinFloat = b'G', "BINFLOAT";
    Proto = 0x80, "PROTO";
    NewObj = 0x81, "NEWOBJ";
    Ext1 = 0x82, "EXT1";
    Ext2 = 0x83, "EXT2";
    Ext4 = 0x84, "EXT4";
    Tuple1 = 0x85, "TUPLE1";
    Tuple2 = 0x86, "TUPLE2";
    Tuple3 = 0x87, "TUPLE3";
    NewTrue = 0x88, "NEWTRUE";
    NewFalse = 0x89, "NEWFALSE";
    Long1 = 0x8a, "LONG1";
    Long4 = 0x8b, "LONG4";
    BinBytes = b'B', "BINBYTES";
    ShortBinBytes = b'C', "SHORT_BINBYTES";
    ShortBinUnicode = 0x8c, "SHORT_BINUNICODE";
    BinUnicode8 = 0x8d, "BINUNICODE8";
    BinBytes8 = 0x8e, "BINBYTES8";
    EmptySet = 0x8f, "EMPTY_SET";
    AddItems = 0x90, "ADDITEMS";
    FrozenSet = 0x91, "FROZENSET";
    NewObjEx = 0x92, "NEWOBJ_EX";
    StackGlobal = 0x93, "STACK_GLOBAL";
    Memoize = 0x94, "MEMOIZE";
    Frame = 0x95, "FRAME";
    ByteArray8 = 0x96, "BYTEARRAY8";
    NextBuffer = 0x97, "NEXT_BUFFER";
    ReadonlyBuffer = 0x98, "READONLY_BUFFER";
}

impl OpCode {
    /// The byte that encodes the opcode.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// The `pickletools` name of an opcode byte (`"unknown"` for a byte that is no opcode).
pub fn opcode_name(op: u8) -> &'static str {
    OpCode::from_byte(op).map_or("unknown", OpCode::name)
}
