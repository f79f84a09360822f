//! Typed values from raw words, by the profile's decode classes.

use osi_profile::{ClassRef, FunctionRef, Location, Profile};

use crate::record::Args;

/// A decoded argument or return value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// Boolean.
    Bool(bool),
    /// Enum with the name of its value if the value is named.
    Enum(i64, Option<&'a str>),
    /// A string read from guest memory (not necessarily UTF-8).
    Str(&'a [u8]),
    /// A pointer to a named struct or union (`type_name` as written, e.g. `struct file`).
    StructPtr(u64, &'a str),
    /// Any other pointer, or a string that could not be read.
    Ptr(u64),
    /// A small struct by value: its one or two eightbytes.
    Words(u64, u64, u8),
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

/// Decodes one word by class; `string` is the bytes read for a `char *` (None: unreadable).
/// Returns None for classes with no value (`void`, floats, unknown types).
pub fn decode_word<'a>(
    profile: &'a Profile,
    class: ClassRef<'a>,
    word: u64,
    high: u64,
    string: Option<&'a [u8]>,
) -> Option<Value<'a>> {
    Some(match class {
        ClassRef::Void | ClassRef::Float(_) | ClassRef::Unknown => return None,
        ClassRef::Signed(w) => Value::Int(sign_extend(word, w)),
        ClassRef::Unsigned(w) => Value::UInt(zero_extend(word, w)),
        ClassRef::Bool => Value::Bool(word as u8 != 0),
        ClassRef::Enum(table) => {
            let v = word as i32 as i64;
            Value::Enum(v, profile.enum_name(table, v))
        }
        ClassRef::CharPtr => match string {
            Some(s) => Value::Str(s),
            None => Value::Ptr(word),
        },
        ClassRef::StructPtr(name) => Value::StructPtr(word, name),
        ClassRef::Pointer => Value::Ptr(word),
        ClassRef::StructByValue(size) => Value::Words(word, high, size.min(16) as u8),
    })
}

/// Splits an entry's string arena slice into its strings, in `char *` parameter order.
pub struct Strings<'a> {
    arena: &'a [u8],
    pos: usize,
}

impl<'a> Strings<'a> {
    /// Strings of an entry starting at `args.strings` in `arena`.
    pub fn new(arena: &'a [u8], args: &Args) -> Self {
        Strings {
            arena,
            pos: args.strings as usize,
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
pub fn words_for(loc: Location) -> usize {
    match loc {
        Location::RegPair(..) => 2,
        _ => 1,
    }
}

/// Calls `f(param index, name, value)` for each decodable argument of an entry.
pub fn for_each_arg<'a>(
    profile: &'a Profile,
    func: FunctionRef<'a>,
    args: &Args,
    arena: &'a [u8],
    mut f: impl FnMut(usize, &'a str, Value<'a>),
) {
    let mut strings = Strings::new(arena, args);
    let mut w = 0usize;
    for (i, p) in func.params().enumerate() {
        let n = words_for(p.location());
        if w + n > args.len as usize {
            break;
        }
        let class = p.class();
        let string = if class == ClassRef::CharPtr {
            strings.next_string()
        } else {
            None
        };
        let missing = args.missing & (1 << w) != 0;
        let (lo, hi) = (args.words[w], if n == 2 { args.words[w + 1] } else { 0 });
        w += n;
        if missing {
            continue;
        }
        if let Some(v) = decode_word(profile, class, lo, hi, string) {
            f(i, p.name(), v);
        }
    }
}
