//! Typed debug annotations from raw argument words, by the profile's decode classes.
//!
//! A function's parameters are resolved once into a [`Plan`] (annotation name iids, kinds,
//! words per parameter); each entry then only walks its words.

use osi_profile::{Location, Profile};

use crate::record::ArgsSlice;
use rrr_perfetto::encode::Enc;
use rrr_perfetto::fields::{
    A_ARRAY, A_BOOL, A_INT, A_NAME_IID, A_POINTER, A_STRING, A_UINT, E_ANNOTATION,
};
use rrr_perfetto::IID_RETURN;

/// Splits an entry's string arena slice into its strings, in `char *` parameter order.
pub(crate) struct Strings<'a> {
    arena: &'a [u8],
    pos: usize,
}

impl<'a> Strings<'a> {
    /// Strings of an entry starting at offset `strings` in `arena`.
    pub fn new(arena: &'a [u8], strings: u32) -> Self {
        Strings {
            arena,
            pos: strings as usize,
        }
    }

    /// The next string; `None` if it was unreadable (or the arena is exhausted).
    pub fn next_string(&mut self) -> Option<&'a [u8]> {
        let len = self.arena.get(self.pos..self.pos + 2)?;
        let len = u16::from_le_bytes([len[0], len[1]]);
        self.pos += 2;
        if len == u16::MAX {
            return None;
        }
        let s = self.arena.get(self.pos..self.pos + len as usize)?;
        self.pos += len as usize;
        Some(s)
    }
}

/// Number of raw words a parameter at this location takes in [`Args`].
pub(crate) fn words_for(loc: Location) -> usize {
    match loc {
        Location::RegPair(..) => 2,
        _ => 1,
    }
}

/// How one parameter (or return value) is decoded and named.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Skip,
    Signed(u8),
    Unsigned(u8),
    Bool,
    Enum(u32),
    Str,
    /// A pointer; one to a struct has its type in its annotation name (see [`Plan`]).
    Pointer,
    Words(u8),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanParam {
    pub name_iid: u32,
    pub kind: Kind,
    pub words: u8,
}

/// A function's resolved decoding; its parameters are `len` entries from `first` in the
/// writer's flat parameter table (one array: one cache miss per cold function, not two).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Event name iid, handed out in order of first use: functions used early (the hot
    /// ones) get short varints.
    pub iid: u32,
    pub first: u32,
    pub len: u32,
    pub ret: Kind,
    /// Annotation name iid of the return value: `return`, or `return (struct foo *)` when
    /// it points to a struct.
    pub ret_iid: u32,
    /// The function has been interned and planned.
    pub ready: bool,
    /// User-space function.
    pub user: bool,
}

impl Plan {
    /// A function not used yet.
    pub const NONE: Plan = Plan {
        iid: 0,
        first: 0,
        len: 0,
        ret: Kind::Skip,
        ret_iid: IID_RETURN as u32,
        ready: false,
        user: false,
    };
}

fn sign_extend(v: u64, bytes: u8) -> i64 {
    match bytes {
        1 => v as i8 as i64,
        2 => v as i16 as i64,
        4 => v as i32 as i64,
        _ => v as i64,
    }
}

fn zero_extend(v: u64, bytes: u8) -> u64 {
    match bytes {
        1 => v as u8 as u64,
        2 => v as u16 as u64,
        4 => v as u32 as u64,
        _ => v,
    }
}

/// The field and value of a value that is one varint (integers, bools, narrow structs);
/// `None` for the others.
#[inline(always)]
fn varint_value(kind: Kind, lo: u64) -> Option<(u32, u64)> {
    match kind {
        Kind::Signed(w) => Some((A_INT, sign_extend(lo, w) as u64)),
        Kind::Unsigned(w) => Some((A_UINT, zero_extend(lo, w))),
        Kind::Bool => Some((A_BOOL, (lo as u8 != 0) as u64)),
        Kind::Words(n) if n <= 8 => Some((A_UINT, lo)),
        _ => None,
    }
}

/// Encodes the field(s) of a value that [`varint_value`] does not cover (nor a pointer).
/// `string`: the bytes read for a `char *`.
fn encode_value(
    e: &mut Enc<'_>,
    profile: &Profile,
    kind: Kind,
    lo: u64,
    hi: u64,
    string: Option<&[u8]>,
) {
    match kind {
        Kind::Enum(table) => {
            let v = lo as i32 as i64;
            match profile.enum_name(table, v) {
                Some(name) => e.bytes(A_STRING, name.as_bytes()),
                None => e.uint(A_INT, v as u64),
            }
        }
        Kind::Str => match string {
            // Kernel strings are nearly always ASCII, checked faster than UTF-8 as a whole.
            Some(s) if s.is_ascii() || std::str::from_utf8(s).is_ok() => e.bytes(A_STRING, s),
            Some(s) => e.bytes(A_STRING, String::from_utf8_lossy(s).as_bytes()),
            None => e.uint(A_POINTER, lo),
        },
        Kind::Words(_) => {
            for w in [lo, hi] {
                let a = e.open(A_ARRAY);
                e.uint(A_UINT, w);
                e.close(a);
            }
        }
        Kind::Skip | Kind::Signed(_) | Kind::Unsigned(_) | Kind::Bool | Kind::Pointer => {}
    }
}

/// The entry's arguments as debug annotations.
pub(crate) fn encode_args(
    buf: &mut Vec<u8>,
    profile: &Profile,
    params: &[PlanParam],
    args: ArgsSlice<'_>,
    arena: &[u8],
) {
    // The encoder is this function's own, so that it stays in registers (see `Enc`).
    let mut e = Enc::new(buf);
    let mut strings = Strings::new(arena, args.strings);
    let words = args.words;
    let mut w = 0usize;
    for p in params {
        let Some(ws) = words.get(w..w + p.words as usize) else {
            break;
        };
        let string = if matches!(p.kind, Kind::Str) {
            strings.next_string()
        } else {
            None
        };
        let missing = (args.missing >> w) & 1 != 0;
        w += ws.len();
        if missing || matches!(p.kind, Kind::Skip) {
            continue;
        }
        let (lo, hi) = match *ws {
            [lo, hi] => (lo, hi),
            [lo] => (lo, 0),
            _ => continue,
        };
        encode_annotation(&mut e, profile, p.name_iid, p.kind, lo, hi, string);
    }
}

/// One annotation; one of a single varint value is written in one go.
#[inline(always)]
fn encode_annotation(
    e: &mut Enc<'_>,
    profile: &Profile,
    name_iid: u32,
    kind: Kind,
    lo: u64,
    hi: u64,
    string: Option<&[u8]>,
) {
    if matches!(kind, Kind::Pointer) {
        e.named_pointer(E_ANNOTATION, (A_NAME_IID, name_iid as u64), (A_POINTER, lo));
        return;
    }
    if let Some(value) = varint_value(kind, lo) {
        e.message(E_ANNOTATION, [(A_NAME_IID, name_iid as u64), value]);
        return;
    }
    let a = e.open(E_ANNOTATION);
    e.uint(A_NAME_IID, name_iid as u64);
    encode_value(e, profile, kind, lo, hi, string);
    e.close(a);
}

/// The return value as the annotation named `name_iid` (see [`Plan::ret_iid`]).
#[inline(always)]
pub(crate) fn encode_return(
    e: &mut Enc<'_>,
    profile: &Profile,
    kind: Kind,
    name_iid: u32,
    [lo, hi]: [u64; 2],
) {
    if !matches!(kind, Kind::Skip) {
        encode_annotation(e, profile, name_iid, kind, lo, hi, None);
    }
}
