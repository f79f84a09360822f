//! The owned, in-memory form of a profile: what the DWARF reader produces and the format
//! module serialises. Tracers use the memory-mapped [`crate::Profile`] instead.

use std::collections::BTreeMap;

/// How a C value is turned into a typed trace argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// `void` (return type only).
    Void,
    /// Two's-complement integer of the given width in bytes.
    Signed(u8),
    /// Unsigned integer of the given width in bytes.
    Unsigned(u8),
    /// C `_Bool`.
    Bool,
    /// An enum; the index names its table in [`ProfileData::enums`].
    Enum(u32),
    /// `char *` (any qualifiers): a NUL-terminated string in guest memory.
    CharPtr,
    /// Pointer to a named struct or union, e.g. `struct file`.
    StructPtr(String),
    /// Any other pointer (or function pointer).
    Pointer,
    /// A struct or union passed by value, of the given size in bytes.
    StructByValue(u16),
    /// A floating-point value of the given width (never in the kernel).
    Float(u8),
    /// A type the profile cannot classify.
    Unknown,
}

/// Where a parameter lives at the function's first instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// A register, in DWARF x86-64 numbering (0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, ...).
    Reg(u16),
    /// Two registers holding the low and high eightbytes of a small struct.
    RegPair(u16, u16),
    /// In memory at this offset from the stack pointer at entry (the return address is at +0).
    Stack(i32),
    /// Not in the machine at all: a known constant, from the debug info (`DW_AT_const_value`,
    /// or a constant `DW_OP_stack_value` expression), as in gcc's `.constprop` clones. An
    /// address (`DW_OP_addr`) is one too: kernel addresses sign-extend from 32 bits.
    Const(i32),
    /// A register's value plus an offset: a value the caller computed (`DW_OP_bregN off` in
    /// a call site's `DW_AT_call_value`). Register 7 is the stack pointer at the callee's
    /// entry (the caller's offsets are made relative to it).
    RegOffset(u16, i32),
    /// The word in memory at a register plus an offset (a value the caller keeps in its
    /// frame, given by a call site); [`Location::Stack`] when the register is the stack
    /// pointer.
    Memory(u16, i32),
    /// Not passed at all: gcc's `.isra` clone dropped the parameter, and each call site says
    /// what it was (`DW_OP_GNU_parameter_ref`). Found by the call's return address in
    /// [`ProfileData::call_sites`], as gdb finds it.
    CallSite,
    /// Optimized out, or not described at the entry address.
    None,
}

/// A C type as written plus its decode class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeDesc {
    /// The type as a C programmer writes it, e.g. `const char *`.
    pub c_type: String,
    /// How values of this type are decoded.
    pub class: Class,
}

impl TypeDesc {
    /// The `void` type.
    pub fn void() -> Self {
        TypeDesc {
            c_type: "void".into(),
            class: Class::Void,
        }
    }
}

/// One formal parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name (`argN` when DWARF has none).
    pub name: String,
    /// Its type.
    pub ty: TypeDesc,
    /// Where it is at entry.
    pub loc: Location,
}

/// What one call site says of a parameter its callee (a `.isra` clone) does not receive: the
/// value the caller had for it, where the callee's entry can read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CallSiteValue {
    /// The call's return address (the word at the stack pointer at the callee's entry).
    pub return_pc: u64,
    /// The callee's entry address.
    pub callee: u64,
    /// The parameter's position in the callee's parameters.
    pub param: u16,
    /// Where its value is at the callee's entry: a register, a register plus an offset, a
    /// constant, or a stack slot.
    pub loc: Location,
}

/// Flags on a function, stored as a bit set.
pub mod flags {
    /// Not hooked by default (deny-list).
    pub const DENIED: u16 = 1;
    /// Known only from the ELF symbol table (assembly): no parameters.
    pub const SYMBOL_ONLY: u16 = 2;
    /// A gcc clone (`.isra`, `.constprop`, `.part`, `.cold`): parameters from location lists.
    pub const CLONE: u16 = 4;
    /// User-space code (the stimulus), not kernel.
    pub const USER: u16 = 8;
}

/// One function with an entry address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Linkage or DWARF name (clones keep their suffix, e.g. `foo.isra.0`).
    pub name: String,
    /// Address of the first instruction.
    pub entry: u64,
    /// Size in bytes of the range that starts at `entry` (0 if unknown).
    pub size: u32,
    /// Source file of the declaration, if known.
    pub file: Option<String>,
    /// Source line of the declaration (0 if unknown).
    pub line: u32,
    /// The return type.
    pub ret: TypeDesc,
    /// Formal parameters in order.
    pub params: Vec<Param>,
    /// Bit set of [`flags`].
    pub flags: u16,
}

impl Function {
    /// Shifts the enum table indexes this function refers to by `base`.
    pub(crate) fn remap_enums(&mut self, base: u32) {
        let fix = |c: &mut Class| {
            if let Class::Enum(t) = c {
                *t += base;
            }
        };
        fix(&mut self.ret.class);
        for p in &mut self.params {
            fix(&mut p.ty.class);
        }
    }
}

/// The names of one enum type's values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnumType {
    /// `(value, name)` pairs, sorted by value.
    pub values: Vec<(i64, String)>,
}

/// Everything a profile holds, owned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileData {
    /// Functions, sorted by entry address once finished.
    pub functions: Vec<Function>,
    /// Enum value tables referenced by [`Class::Enum`].
    pub enums: Vec<EnumType>,
    /// Numeric OS facts: struct member offsets (`task_struct.pid`), sizes
    /// (`sizeof.task_struct`), symbol addresses (`addr.init_task`), `thread_size`.
    pub facts: BTreeMap<String, i64>,
    /// Textual facts, e.g. `kernel.version`.
    pub text_facts: BTreeMap<String, String>,
    /// The call sites' values of the parameters [`Location::CallSite`] names, sorted.
    pub call_sites: Vec<CallSiteValue>,
}

impl ProfileData {
    /// Adds `other`'s functions and enums (a stimulus binary next to its kernel), keeping this
    /// profile's facts where both have one, and sorts the result.
    pub fn merge(&mut self, other: ProfileData) {
        self.append(other.functions, other.enums);
        self.call_sites.extend(other.call_sites);
        for (k, v) in other.facts {
            self.facts.entry(k).or_insert(v);
        }
        for (k, v) in other.text_facts {
            self.text_facts.entry(k).or_insert(v);
        }
        self.finish();
    }

    /// Appends functions whose enum indexes refer to `enums`, appended too (not sorted yet).
    pub(crate) fn append(&mut self, functions: Vec<Function>, enums: Vec<EnumType>) {
        let base = self.enums.len() as u32;
        self.enums.extend(enums);
        for mut f in functions {
            f.remap_enums(base);
            self.functions.push(f);
        }
    }

    /// Sorts functions by entry address and drops duplicates of an entry address (keeping the
    /// one with the most parameter information).
    pub fn finish(&mut self) {
        self.functions.sort_by(|a, b| {
            a.entry
                .cmp(&b.entry)
                .then(b.params.len().cmp(&a.params.len()))
                .then((a.flags & flags::SYMBOL_ONLY).cmp(&(b.flags & flags::SYMBOL_ONLY)))
        });
        self.functions
            .dedup_by(|later, first| later.entry == first.entry);
        self.call_sites.sort();
        self.call_sites.dedup();
    }
}
