//! The compact on-disk profile: fixed-size little-endian records in sections, read in place
//! from a memory map. Opening checks the header and section bounds only, so a tracer starts
//! in milliseconds whatever the kernel's size.

use std::collections::HashMap;
use std::path::Path;

use bytemuck::{Pod, Zeroable};

use crate::error::ProfileError;
use crate::model::{
    CallSiteValue, Class, EnumType, Function, Location, Param, ProfileData, TypeDesc,
};

/// File magic.
const MAGIC: [u8; 8] = *b"RRRPROF\0";
/// Format version; bumped on any layout change. 2: call-site values, register-plus-offset
/// locations.
pub const FORMAT_VERSION: u32 = 2;

const SECTIONS: usize = 9;
const S_FUNCS: usize = 0;
const S_PARAMS: usize = 1;
const S_ENUMS: usize = 2;
const S_ENUM_VALUES: usize = 3;
const S_FACTS: usize = 4;
const S_TEXT_FACTS: usize = 5;
const S_BY_NAME: usize = 6;
const S_STRINGS: usize = 7;
const S_CALL_SITES: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Section {
    offset: u64,
    len: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Header {
    magic: [u8; 8],
    version: u32,
    section_count: u32,
    sections: [Section; SECTIONS],
}

/// A decode class as stored: kind, width, auxiliary index (enum table or string).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, PartialEq, Eq)]
struct ClassRec {
    kind: u8,
    width: u8,
    size: u16,
    aux: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LocRec {
    kind: u8,
    _pad: u8,
    reg: u16,
    /// Second register, or stack offset.
    aux: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FuncRec {
    entry: u64,
    size: u32,
    name: u32,
    ret_type: u32,
    file: u32,
    line: u32,
    first_param: u32,
    ret_class: ClassRec,
    n_params: u16,
    flags: u16,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ParamRec {
    name: u32,
    c_type: u32,
    class: ClassRec,
    loc: LocRec,
}

/// A [`CallSiteValue`], sorted by (return address, callee, parameter).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CallSiteRec {
    return_pc: u64,
    callee: u64,
    loc: LocRec,
    param: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EnumRec {
    first: u32,
    count: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EnumValueRec {
    value: i64,
    name: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FactRec {
    key: u32,
    _pad: u32,
    value: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TextFactRec {
    key: u32,
    value: u32,
}

mod kind {
    pub const VOID: u8 = 0;
    pub const SIGNED: u8 = 1;
    pub const UNSIGNED: u8 = 2;
    pub const BOOL: u8 = 3;
    pub const ENUM: u8 = 4;
    pub const CHAR_PTR: u8 = 5;
    pub const STRUCT_PTR: u8 = 6;
    pub const POINTER: u8 = 7;
    pub const STRUCT_BY_VALUE: u8 = 8;
    pub const FLOAT: u8 = 9;
    pub const UNKNOWN: u8 = 10;
}

mod loc {
    pub const NONE: u8 = 0;
    pub const REG: u8 = 1;
    pub const REG_PAIR: u8 = 2;
    pub const STACK: u8 = 3;
    pub const CONST: u8 = 4;
    pub const REG_OFFSET: u8 = 5;
    pub const CALL_SITE: u8 = 6;
    pub const MEMORY: u8 = 7;
}

/// Deduplicating string table: each string stored once as `u32 length + bytes`.
#[derive(Default)]
struct Strings {
    blob: Vec<u8>,
    index: HashMap<String, u32>,
}

impl Strings {
    fn add(&mut self, s: &str) -> u32 {
        if let Some(&off) = self.index.get(s) {
            return off;
        }
        let off = self.blob.len() as u32;
        self.blob.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.blob.extend_from_slice(s.as_bytes());
        self.index.insert(s.to_owned(), off);
        off
    }
}

fn class_rec(class: &Class, strings: &mut Strings) -> ClassRec {
    let (kind, width, size, aux) = match class {
        Class::Void => (kind::VOID, 0, 0, 0),
        Class::Signed(w) => (kind::SIGNED, *w, 0, 0),
        Class::Unsigned(w) => (kind::UNSIGNED, *w, 0, 0),
        Class::Bool => (kind::BOOL, 1, 0, 0),
        Class::Enum(t) => (kind::ENUM, 4, 0, *t),
        Class::CharPtr => (kind::CHAR_PTR, 8, 0, 0),
        Class::StructPtr(name) => (kind::STRUCT_PTR, 8, 0, strings.add(name)),
        Class::Pointer => (kind::POINTER, 8, 0, 0),
        Class::StructByValue(size) => (kind::STRUCT_BY_VALUE, 0, *size, 0),
        Class::Float(w) => (kind::FLOAT, *w, 0, 0),
        Class::Unknown => (kind::UNKNOWN, 0, 0, 0),
    };
    ClassRec {
        kind,
        width,
        size,
        aux,
    }
}

fn loc_rec(l: Location) -> LocRec {
    let (kind, reg, aux) = match l {
        Location::None => (loc::NONE, 0, 0),
        Location::Reg(r) => (loc::REG, r, 0),
        Location::RegPair(a, b) => (loc::REG_PAIR, a, b as i32),
        Location::Stack(off) => (loc::STACK, 0, off),
        Location::Const(v) => (loc::CONST, 0, v),
        Location::RegOffset(r, off) => (loc::REG_OFFSET, r, off),
        Location::CallSite => (loc::CALL_SITE, 0, 0),
        Location::Memory(r, off) => (loc::MEMORY, r, off),
    };
    LocRec {
        kind,
        _pad: 0,
        reg,
        aux,
    }
}

fn location(l: &LocRec) -> Location {
    match l.kind {
        loc::REG => Location::Reg(l.reg),
        loc::REG_PAIR => Location::RegPair(l.reg, l.aux as u16),
        loc::STACK => Location::Stack(l.aux),
        loc::CONST => Location::Const(l.aux),
        loc::REG_OFFSET => Location::RegOffset(l.reg, l.aux),
        loc::CALL_SITE => Location::CallSite,
        loc::MEMORY => Location::Memory(l.reg, l.aux),
        _ => Location::None,
    }
}

fn align8(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

impl ProfileData {
    /// Serialises the profile into the on-disk format. Call [`ProfileData::finish`] first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut strings = Strings::default();
        let empty = strings.add("");
        let mut funcs = Vec::with_capacity(self.functions.len());
        let mut params = Vec::new();
        for f in &self.functions {
            funcs.push(FuncRec {
                entry: f.entry,
                size: f.size,
                name: strings.add(&f.name),
                ret_type: strings.add(&f.ret.c_type),
                file: f.file.as_deref().map_or(empty, |s| strings.add(s)),
                line: f.line,
                first_param: params.len() as u32,
                ret_class: class_rec(&f.ret.class, &mut strings),
                n_params: f.params.len().min(u16::MAX as usize) as u16,
                flags: f.flags,
                _pad: 0,
            });
            for p in f.params.iter().take(u16::MAX as usize) {
                params.push(ParamRec {
                    name: strings.add(&p.name),
                    c_type: strings.add(&p.ty.c_type),
                    class: class_rec(&p.ty.class, &mut strings),
                    loc: loc_rec(p.loc),
                });
            }
        }
        let mut enums = Vec::with_capacity(self.enums.len());
        let mut enum_values = Vec::new();
        for e in &self.enums {
            enums.push(EnumRec {
                first: enum_values.len() as u32,
                count: e.values.len() as u32,
            });
            for (value, name) in &e.values {
                enum_values.push(EnumValueRec {
                    value: *value,
                    name: strings.add(name),
                    _pad: 0,
                });
            }
        }
        let facts: Vec<FactRec> = self
            .facts
            .iter()
            .map(|(k, v)| FactRec {
                key: strings.add(k),
                _pad: 0,
                value: *v,
            })
            .collect();
        let text_facts: Vec<TextFactRec> = self
            .text_facts
            .iter()
            .map(|(k, v)| TextFactRec {
                key: strings.add(k),
                value: strings.add(v),
            })
            .collect();
        let mut by_name: Vec<u32> = (0..funcs.len() as u32).collect();
        by_name.sort_by(|&a, &b| {
            self.functions[a as usize]
                .name
                .cmp(&self.functions[b as usize].name)
                .then(a.cmp(&b))
        });

        let call_sites: Vec<CallSiteRec> = self
            .call_sites
            .iter()
            .map(|c| CallSiteRec {
                return_pc: c.return_pc,
                callee: c.callee,
                loc: loc_rec(c.loc),
                param: u32::from(c.param),
                _pad: 0,
            })
            .collect();

        let bodies: [&[u8]; SECTIONS] = [
            bytemuck::cast_slice(&funcs),
            bytemuck::cast_slice(&params),
            bytemuck::cast_slice(&enums),
            bytemuck::cast_slice(&enum_values),
            bytemuck::cast_slice(&facts),
            bytemuck::cast_slice(&text_facts),
            bytemuck::cast_slice(&by_name),
            &strings.blob,
            bytemuck::cast_slice(&call_sites),
        ];
        let mut out = vec![0u8; std::mem::size_of::<Header>()];
        let mut header = Header {
            magic: MAGIC,
            version: FORMAT_VERSION,
            section_count: SECTIONS as u32,
            sections: [Section { offset: 0, len: 0 }; SECTIONS],
        };
        for (i, body) in bodies.iter().enumerate() {
            align8(&mut out);
            header.sections[i] = Section {
                offset: out.len() as u64,
                len: body.len() as u64,
            };
            out.extend_from_slice(body);
        }
        out[..std::mem::size_of::<Header>()].copy_from_slice(bytemuck::bytes_of(&header));
        out
    }
}

/// The bytes a profile is read from: a read-only memory map, or an 8-aligned owned buffer.
enum Backing {
    Map(memmap2::Mmap),
    Owned(Vec<u64>, usize),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v, len) => &bytemuck::cast_slice(v)[..*len],
        }
    }
}

/// A profile opened in place. Cheap to open; every accessor reads the mapped records.
pub struct Profile {
    backing: Backing,
    sections: [(usize, usize); SECTIONS],
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("functions", &self.len())
            .finish()
    }
}

impl Profile {
    /// Maps and checks the profile at `path`.
    pub fn open(path: &Path) -> Result<Self, ProfileError> {
        let file = std::fs::File::open(path).map_err(|e| ProfileError::io(path, e))?;
        // SAFETY: the file is opened read-only and profiles are written once, atomically
        // (temp file + rename), so the mapped bytes do not change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ProfileError::io(path, e))?;
        Self::from_backing(Backing::Map(map))
    }

    /// Reads a profile from bytes produced by [`ProfileData::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProfileError> {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Self::from_backing(Backing::Owned(words, bytes.len()))
    }

    fn from_backing(backing: Backing) -> Result<Self, ProfileError> {
        let bytes = backing.bytes();
        let hsize = std::mem::size_of::<Header>();
        if bytes.len() < 12 || bytes[..8] != MAGIC {
            return Err(ProfileError::NotAProfile);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(ProfileError::Version {
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        if bytes.len() < hsize {
            return Err(ProfileError::Corrupt("header is truncated"));
        }
        let header: Header = bytemuck::pod_read_unaligned(&bytes[..hsize]);
        let mut sections = [(0usize, 0usize); SECTIONS];
        for (i, s) in header.sections.iter().enumerate() {
            let end = s
                .offset
                .checked_add(s.len)
                .ok_or(ProfileError::Corrupt("section overflow"))?;
            if end > bytes.len() as u64 || !s.offset.is_multiple_of(8) {
                return Err(ProfileError::Corrupt(
                    "section outside the file (truncated?)",
                ));
            }
            sections[i] = (s.offset as usize, s.len as usize);
        }
        let p = Profile { backing, sections };
        // Check that every record section holds whole records.
        p.try_records::<FuncRec>(S_FUNCS)?;
        p.try_records::<ParamRec>(S_PARAMS)?;
        p.try_records::<EnumRec>(S_ENUMS)?;
        p.try_records::<EnumValueRec>(S_ENUM_VALUES)?;
        p.try_records::<FactRec>(S_FACTS)?;
        p.try_records::<TextFactRec>(S_TEXT_FACTS)?;
        p.try_records::<u32>(S_BY_NAME)?;
        p.try_records::<CallSiteRec>(S_CALL_SITES)?;
        Ok(p)
    }

    fn section(&self, i: usize) -> &[u8] {
        let (off, len) = self.sections[i];
        &self.backing.bytes()[off..off + len]
    }

    fn try_records<T: Pod>(&self, i: usize) -> Result<&[T], ProfileError> {
        bytemuck::try_cast_slice(self.section(i))
            .map_err(|_| ProfileError::Corrupt("section is not a whole number of records"))
    }

    fn records<T: Pod>(&self, i: usize) -> &[T] {
        // Checked once in `from_backing`.
        self.try_records(i).unwrap_or(&[])
    }

    fn string(&self, off: u32) -> &str {
        let blob = self.section(S_STRINGS);
        let off = off as usize;
        let Some(len) = blob.get(off..off + 4) else {
            return "";
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        blob.get(off + 4..off + 4 + len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Number of functions; function ids are `0..len()`, in entry-address order.
    pub fn len(&self) -> usize {
        self.records::<FuncRec>(S_FUNCS).len()
    }

    /// True if the profile has no functions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The function with this id.
    pub fn function(&self, id: u32) -> Option<FunctionRef<'_>> {
        let rec = self.records::<FuncRec>(S_FUNCS).get(id as usize)?;
        Some(FunctionRef {
            profile: self,
            id,
            rec,
        })
    }

    /// All functions in entry-address order.
    pub fn functions(&self) -> impl ExactSizeIterator<Item = FunctionRef<'_>> {
        self.records::<FuncRec>(S_FUNCS)
            .iter()
            .enumerate()
            .map(|(i, rec)| FunctionRef {
                profile: self,
                id: i as u32,
                rec,
            })
    }

    /// The id of the function whose entry is exactly `addr`.
    pub fn function_at_entry(&self, addr: u64) -> Option<u32> {
        let funcs = self.records::<FuncRec>(S_FUNCS);
        funcs
            .binary_search_by_key(&addr, |f| f.entry)
            .ok()
            .map(|i| i as u32)
    }

    /// The id of the function whose range `[entry, entry + size)` holds `addr`.
    pub fn function_containing(&self, addr: u64) -> Option<u32> {
        let funcs = self.records::<FuncRec>(S_FUNCS);
        let i = funcs.partition_point(|f| f.entry <= addr).checked_sub(1)?;
        let f = &funcs[i];
        (addr < f.entry + f.size.max(1) as u64).then_some(i as u32)
    }

    /// The id of the (first) function with this name.
    pub fn function_by_name(&self, name: &str) -> Option<u32> {
        let funcs = self.records::<FuncRec>(S_FUNCS);
        let by_name = self.records::<u32>(S_BY_NAME);
        let i = by_name.partition_point(|&id| self.string(funcs[id as usize].name) < name);
        let id = *by_name.get(i)?;
        (self.string(funcs[id as usize].name) == name).then_some(id)
    }

    /// The name of `value` in enum table `table`.
    pub fn enum_name(&self, table: u32, value: i64) -> Option<&str> {
        let e = self.records::<EnumRec>(S_ENUMS).get(table as usize)?;
        let values = self.records::<EnumValueRec>(S_ENUM_VALUES);
        let vals = values.get(e.first as usize..(e.first + e.count) as usize)?;
        let i = vals.binary_search_by_key(&value, |v| v.value).ok()?;
        Some(self.string(vals[i].name))
    }

    /// A numeric OS fact (see [`ProfileData::facts`]).
    pub fn fact(&self, key: &str) -> Option<i64> {
        let facts = self.records::<FactRec>(S_FACTS);
        let i = facts
            .binary_search_by(|f| self.string(f.key).cmp(key))
            .ok()?;
        Some(facts[i].value)
    }

    /// All numeric facts, sorted by key.
    pub fn facts(&self) -> impl Iterator<Item = (&str, i64)> {
        self.records::<FactRec>(S_FACTS)
            .iter()
            .map(|f| (self.string(f.key), f.value))
    }

    /// What the call returning to `return_pc` passed as parameter `param` of `callee` (an
    /// entry address), when the callee does not receive it ([`Location::CallSite`]): where
    /// its value is at the callee's entry, or [`Location::None`] if that call site does not
    /// say (an indirect call, a tail call, a value the entry cannot read).
    pub fn call_site_value(&self, return_pc: u64, callee: u64, param: u16) -> Location {
        let sites = self.records::<CallSiteRec>(S_CALL_SITES);
        let key = (return_pc, callee, u32::from(param));
        sites
            .binary_search_by(|c| (c.return_pc, c.callee, c.param).cmp(&key))
            .map_or(Location::None, |i| location(&sites[i].loc))
    }

    /// Whether this profile was made by this version of the reader ([`crate::READER_VERSION`]):
    /// one made by another may hold what that reader got wrong, and should be built again.
    pub fn is_current(&self) -> bool {
        self.text_fact(crate::reader::READER_FACT) == Some(&*crate::READER_VERSION.to_string())
    }

    /// A textual fact, e.g. `kernel.version`.
    pub fn text_fact(&self, key: &str) -> Option<&str> {
        let facts = self.records::<TextFactRec>(S_TEXT_FACTS);
        let i = facts
            .binary_search_by(|f| self.string(f.key).cmp(key))
            .ok()?;
        Some(self.string(facts[i].value))
    }

    /// The profile's owned form, as [`ProfileData::to_bytes`] was given it: so a profile built
    /// once (a kernel's) can be merged with another (a stimulus's) without reading the DWARF
    /// again.
    pub fn to_data(&self) -> ProfileData {
        let class = |c: &ClassRec| match self.class(c) {
            ClassRef::Void => Class::Void,
            ClassRef::Signed(w) => Class::Signed(w),
            ClassRef::Unsigned(w) => Class::Unsigned(w),
            ClassRef::Bool => Class::Bool,
            ClassRef::Enum(t) => Class::Enum(t),
            ClassRef::CharPtr => Class::CharPtr,
            ClassRef::StructPtr(name) => Class::StructPtr(name.to_owned()),
            ClassRef::Pointer => Class::Pointer,
            ClassRef::StructByValue(size) => Class::StructByValue(size),
            ClassRef::Float(w) => Class::Float(w),
            ClassRef::Unknown => Class::Unknown,
        };
        let functions = self
            .functions()
            .map(|f| Function {
                name: f.name().to_owned(),
                entry: f.entry(),
                size: f.size(),
                file: Some(f.file()).filter(|s| !s.is_empty()).map(str::to_owned),
                line: f.line(),
                ret: TypeDesc {
                    c_type: f.ret_type().to_owned(),
                    class: class(&f.rec.ret_class),
                },
                params: f
                    .params()
                    .map(|p| Param {
                        name: p.name().to_owned(),
                        ty: TypeDesc {
                            c_type: p.c_type().to_owned(),
                            class: class(&p.rec.class),
                        },
                        loc: p.location(),
                    })
                    .collect(),
                flags: f.flags(),
            })
            .collect();
        let values = self.records::<EnumValueRec>(S_ENUM_VALUES);
        let enums = self
            .records::<EnumRec>(S_ENUMS)
            .iter()
            .map(|e| EnumType {
                values: values
                    .get(e.first as usize..(e.first + e.count) as usize)
                    .unwrap_or(&[])
                    .iter()
                    .map(|v| (v.value, self.string(v.name).to_owned()))
                    .collect(),
            })
            .collect();
        let text_facts = self
            .records::<TextFactRec>(S_TEXT_FACTS)
            .iter()
            .map(|f| {
                (
                    self.string(f.key).to_owned(),
                    self.string(f.value).to_owned(),
                )
            })
            .collect();
        let call_sites = self
            .records::<CallSiteRec>(S_CALL_SITES)
            .iter()
            .map(|c| CallSiteValue {
                return_pc: c.return_pc,
                callee: c.callee,
                param: c.param as u16,
                loc: location(&c.loc),
            })
            .collect();
        ProfileData {
            functions,
            enums,
            facts: self.facts().map(|(k, v)| (k.to_owned(), v)).collect(),
            text_facts,
            call_sites,
        }
    }

    fn class(&self, c: &ClassRec) -> ClassRef<'_> {
        match c.kind {
            kind::VOID => ClassRef::Void,
            kind::SIGNED => ClassRef::Signed(c.width),
            kind::UNSIGNED => ClassRef::Unsigned(c.width),
            kind::BOOL => ClassRef::Bool,
            kind::ENUM => ClassRef::Enum(c.aux),
            kind::CHAR_PTR => ClassRef::CharPtr,
            kind::STRUCT_PTR => ClassRef::StructPtr(self.string(c.aux)),
            kind::POINTER => ClassRef::Pointer,
            kind::STRUCT_BY_VALUE => ClassRef::StructByValue(c.size),
            kind::FLOAT => ClassRef::Float(c.width),
            _ => ClassRef::Unknown,
        }
    }
}

/// A decode class read from a profile (borrowed form of [`Class`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassRef<'a> {
    /// See [`Class::Void`].
    Void,
    /// See [`Class::Signed`].
    Signed(u8),
    /// See [`Class::Unsigned`].
    Unsigned(u8),
    /// See [`Class::Bool`].
    Bool,
    /// See [`Class::Enum`].
    Enum(u32),
    /// See [`Class::CharPtr`].
    CharPtr,
    /// See [`Class::StructPtr`].
    StructPtr(&'a str),
    /// See [`Class::Pointer`].
    Pointer,
    /// See [`Class::StructByValue`].
    StructByValue(u16),
    /// See [`Class::Float`].
    Float(u8),
    /// See [`Class::Unknown`].
    Unknown,
}

/// A function record in a mapped profile.
#[derive(Clone, Copy)]
pub struct FunctionRef<'a> {
    profile: &'a Profile,
    id: u32,
    rec: &'a FuncRec,
}

impl<'a> FunctionRef<'a> {
    /// Its id (index in entry order).
    pub fn id(&self) -> u32 {
        self.id
    }
    /// Its name.
    pub fn name(&self) -> &'a str {
        self.profile.string(self.rec.name)
    }
    /// Entry address.
    pub fn entry(&self) -> u64 {
        self.rec.entry
    }
    /// Size in bytes (0 if unknown).
    pub fn size(&self) -> u32 {
        self.rec.size
    }
    /// Declaring source file, empty if unknown.
    pub fn file(&self) -> &'a str {
        self.profile.string(self.rec.file)
    }
    /// Declaring source line, 0 if unknown.
    pub fn line(&self) -> u32 {
        self.rec.line
    }
    /// Bit set of [`crate::flags`].
    pub fn flags(&self) -> u16 {
        self.rec.flags
    }
    /// True if the deny-list excludes it from hooking by default.
    pub fn is_denied(&self) -> bool {
        self.rec.flags & crate::flags::DENIED != 0
    }
    /// True for user-space (stimulus) code.
    pub fn is_user(&self) -> bool {
        self.rec.flags & crate::flags::USER != 0
    }
    /// The return type as written.
    pub fn ret_type(&self) -> &'a str {
        self.profile.string(self.rec.ret_type)
    }
    /// The return value's decode class.
    pub fn ret_class(&self) -> ClassRef<'a> {
        self.profile.class(&self.rec.ret_class)
    }
    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.rec.n_params as usize
    }
    /// Global index of the first parameter (params are numbered across the profile).
    pub fn first_param(&self) -> u32 {
        self.rec.first_param
    }
    /// The parameters in order.
    pub fn params(&self) -> impl ExactSizeIterator<Item = ParamRef<'a>> + 'a {
        let all = self.profile.records::<ParamRec>(S_PARAMS);
        let first = self.rec.first_param as usize;
        let profile = self.profile;
        all.get(first..first + self.rec.n_params as usize)
            .unwrap_or(&[])
            .iter()
            .map(move |rec| ParamRef { profile, rec })
    }
}

/// A parameter record in a mapped profile.
#[derive(Clone, Copy)]
pub struct ParamRef<'a> {
    profile: &'a Profile,
    rec: &'a ParamRec,
}

impl<'a> ParamRef<'a> {
    /// Its name.
    pub fn name(&self) -> &'a str {
        self.profile.string(self.rec.name)
    }
    /// Its C type as written.
    pub fn c_type(&self) -> &'a str {
        self.profile.string(self.rec.c_type)
    }
    /// Its decode class.
    pub fn class(&self) -> ClassRef<'a> {
        self.profile.class(&self.rec.class)
    }
    /// Where it is at entry.
    pub fn location(&self) -> Location {
        location(&self.rec.loc)
    }
}
