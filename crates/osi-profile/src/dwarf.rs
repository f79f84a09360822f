//! Functions, parameters, types and locations from DWARF (gimli), one compilation unit at a
//! time, spread over the machine's cores.

use std::collections::{BTreeMap, HashMap};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};

use crate::cfi::Cfi;
use crate::model::{flags, CallSiteValue, Class, EnumType, Function, Location, Param, TypeDesc};

pub(crate) type R<'a> = EndianSlice<'a, RunTimeEndian>;
type Unit<'a> = gimli::Unit<R<'a>>;
type Die<'a, 'u> = gimli::DebuggingInformationEntry<'u, 'u, R<'a>>;

/// Struct (and union) names whose layouts become OS facts.
pub(crate) const FACT_STRUCTS: &[&str] = &[
    "task_struct",
    "cred",
    "mm_struct",
    "vm_area_struct",
    "file",
    "files_struct",
    "fdtable",
    "qstr",
    "dentry",
    "dentry_operations",
    "vfsmount",
    "mount",
    "path",
    "pcpu_hot",
    "uts_namespace",
    "new_utsname",
    "thread_union",
    "thread_struct",
    "irq_stack",
];

/// A struct's size and member offsets (anonymous members flattened).
#[derive(Clone, Debug, Default)]
pub(crate) struct Layout {
    pub size: u64,
    pub members: BTreeMap<String, (u64, u64)>,
}

/// What one worker extracts.
#[derive(Default)]
pub(crate) struct Extract {
    pub functions: Vec<Function>,
    pub enums: Vec<EnumType>,
    pub layouts: BTreeMap<String, Layout>,
    pub call_sites: Vec<CallSiteValue>,
    pub skeleton_units: usize,
    pub units: usize,
}

/// Per-unit caches.
struct UnitCtx<'a, 'u> {
    dwarf: &'u gimli::Dwarf<R<'a>>,
    unit: &'u Unit<'a>,
    types: HashMap<UnitOffset, TypeDesc>,
    enums: HashMap<UnitOffset, u32>,
    files: HashMap<u64, Option<String>>,
    /// The parameters that only their call sites know (`DW_OP_GNU_parameter_ref`): the
    /// callee's entry, the parameter's position, and the parameter DIE call sites name.
    param_refs: Vec<(u64, u16, UnitOffset)>,
    /// Addresses in the debug info are where the code runs (not a position-independent
    /// file's, which moves by its load address).
    absolute: bool,
    /// The file's call frame information (a caller's frame base at a call).
    cfi: &'u Cfi<'a>,
}

/// Walks `headers[i]` for every `i` in `indices`; `absolute`: the file's addresses are where
/// it runs (an executable, not position-independent), so address constants are values.
pub(crate) fn extract<'a>(
    dwarf: &gimli::Dwarf<R<'a>>,
    headers: &[gimli::UnitHeader<R<'a>>],
    indices: impl Iterator<Item = usize>,
    absolute: bool,
    cfi: &Cfi<'a>,
) -> Result<Extract, gimli::Error> {
    let mut out = Extract::default();
    for i in indices {
        let unit = dwarf.unit(headers[i])?;
        out.units += 1;
        if matches!(unit.header.type_(), gimli::UnitType::Skeleton(_)) || unit.dwo_id.is_some() {
            out.skeleton_units += 1;
            continue;
        }
        let mut ctx = UnitCtx {
            dwarf,
            unit: &unit,
            types: HashMap::new(),
            enums: HashMap::new(),
            files: HashMap::new(),
            param_refs: Vec::new(),
            absolute,
            cfi,
        };
        for_each_child(&unit, None, None, |die| {
            match die.tag() {
                gimli::DW_TAG_subprogram => {
                    if let Some(f) = ctx.function(die, &mut out.enums)? {
                        out.functions.push(f);
                    }
                }
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                    let name = ctx.name(die)?;
                    if let Some(name) = name.filter(|n| FACT_STRUCTS.contains(&n.as_str())) {
                        if die.attr_value(gimli::DW_AT_declaration)?.is_none()
                            && !out.layouts.contains_key(&name)
                        {
                            let layout = ctx.layout(die.offset())?;
                            out.layouts.insert(name, layout);
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        if !ctx.param_refs.is_empty() {
            ctx.call_site_values(&mut out.call_sites)?;
        }
    }
    Ok(out)
}

/// Calls `f` on each child of the DIE at `of` (the unit's root if None) whose tag is `tag`
/// (any tag if None).
fn for_each_child<'a, 'u>(
    unit: &'u Unit<'a>,
    of: Option<UnitOffset>,
    tag: Option<gimli::DwTag>,
    mut f: impl FnMut(&Die<'a, 'u>) -> Result<(), gimli::Error>,
) -> Result<(), gimli::Error> {
    let mut tree = unit.entries_tree(of)?;
    let root = tree.root()?;
    let mut children = root.children();
    while let Some(node) = children.next()? {
        let die = node.entry();
        if tag.is_none_or(|t| die.tag() == t) {
            f(die)?;
        }
    }
    Ok(())
}

impl<'a, 'u> UnitCtx<'a, 'u> {
    fn string(&self, v: AttributeValue<R<'a>>) -> Result<String, gimli::Error> {
        let s = self.dwarf.attr_string(self.unit, v)?;
        Ok(String::from_utf8_lossy(s.slice()).into_owned())
    }

    fn name(&self, die: &Die<'a, '_>) -> Result<Option<String>, gimli::Error> {
        match die.attr_value(gimli::DW_AT_name)? {
            Some(v) => Ok(Some(self.string(v)?)),
            None => Ok(None),
        }
    }

    /// The DIE an attribute refers to, if it is in this unit.
    fn reference(&self, v: Option<AttributeValue<R<'a>>>) -> Option<UnitOffset> {
        match v? {
            AttributeValue::UnitRef(off) => Some(off),
            AttributeValue::DebugInfoRef(off) => off.to_unit_offset(&self.unit.header),
            _ => None,
        }
    }

    fn udata(v: Option<AttributeValue<R<'a>>>) -> Option<u64> {
        v.and_then(|v| v.udata_value())
    }

    /// The entry address: low_pc, else entry_pc, else the first range.
    fn entry_pc(&self, die: &Die<'a, '_>) -> Result<Option<u64>, gimli::Error> {
        for at in [gimli::DW_AT_low_pc, gimli::DW_AT_entry_pc] {
            if let Some(v) = die.attr_value(at)? {
                if let Some(a) = self.dwarf.attr_address(self.unit, v)? {
                    return Ok(Some(a));
                }
            }
        }
        if die.attr_value(gimli::DW_AT_ranges)?.is_some() {
            let mut ranges = self.dwarf.die_ranges(self.unit, die)?;
            let mut first: Option<gimli::Range> = None;
            while let Some(r) = ranges.next()? {
                if first.is_none() {
                    first = Some(r);
                }
            }
            return Ok(first.map(|r| r.begin));
        }
        Ok(None)
    }

    fn size_of_range(&self, die: &Die<'a, '_>, entry: u64) -> Result<u64, gimli::Error> {
        if let Some(high) = die.attr_value(gimli::DW_AT_high_pc)? {
            return Ok(match high {
                AttributeValue::Addr(a) => a.saturating_sub(entry),
                v => v.udata_value().unwrap_or(0),
            });
        }
        if die.attr_value(gimli::DW_AT_ranges)?.is_some() {
            let mut ranges = self.dwarf.die_ranges(self.unit, die)?;
            while let Some(r) = ranges.next()? {
                if r.begin == entry {
                    return Ok(r.end - r.begin);
                }
            }
        }
        Ok(0)
    }

    fn file(&mut self, index: u64) -> Option<String> {
        if let Some(f) = self.files.get(&index) {
            return f.clone();
        }
        let f = (|| {
            let lp = self.unit.line_program.as_ref()?;
            let header = lp.header();
            let file = header.file(index)?;
            let name = self.dwarf.attr_string(self.unit, file.path_name()).ok()?;
            let name = String::from_utf8_lossy(name.slice()).into_owned();
            if name.starts_with('/') {
                return Some(name);
            }
            let dir = file
                .directory(header)
                .and_then(|d| self.dwarf.attr_string(self.unit, d).ok())
                .map(|d| String::from_utf8_lossy(d.slice()).into_owned());
            // With its directory, absolute or not: `--only fs/ext4/` matches by path.
            Some(match dir {
                Some(d) if !d.is_empty() => format!("{}/{name}", d.trim_end_matches('/')),
                _ => name,
            })
        })();
        self.files.insert(index, f.clone());
        f
    }

    /// A subprogram with an entry address, or None (declarations, abstract instances).
    fn function(
        &mut self,
        die: &Die<'a, '_>,
        enums: &mut Vec<EnumType>,
    ) -> Result<Option<Function>, gimli::Error> {
        let Some(entry) = self.entry_pc(die)? else {
            return Ok(None);
        };
        if entry == 0 {
            return Ok(None);
        }
        let size = self.size_of_range(die, entry)?;
        // Name, types and declaration from the abstract origin / specification chain.
        let mut decl = die.offset();
        let mut name = self.name(die)?;
        for _ in 0..4 {
            let d = self.unit.entry(decl)?;
            let next = self
                .reference(d.attr_value(gimli::DW_AT_abstract_origin)?)
                .or(self.reference(d.attr_value(gimli::DW_AT_specification)?));
            if name.is_none() {
                name = self.name(&d)?;
            }
            match next {
                Some(n) if name.is_none() || d.attr_value(gimli::DW_AT_type)?.is_none() => decl = n,
                _ => break,
            }
        }
        let Some(name) = name else { return Ok(None) };
        let decl_die = self.unit.entry(decl)?;
        let ret = self.type_of(&decl_die, enums)?;
        let file_index = match decl_die.attr_value(gimli::DW_AT_decl_file)? {
            Some(AttributeValue::FileIndex(i)) => Some(i),
            v => Self::udata(v),
        };
        let line = Self::udata(decl_die.attr_value(gimli::DW_AT_decl_line)?).unwrap_or(0) as u32;
        let file = file_index.and_then(|i| self.file(i));

        // Parameters: the concrete DIE's, named and typed through their origins; if it has
        // none, the declaration's.
        let mut params = self.params(die.offset(), entry, enums)?;
        if params.is_empty() && decl != die.offset() {
            params = self.params(decl, entry, enums)?;
        }
        for (i, p) in params.iter().enumerate() {
            if let (Location::CallSite, Some(r)) = (p.param.loc, p.ref_to) {
                self.param_refs.push((entry, i as u16, r));
            }
        }
        let params = params.into_iter().map(|p| p.param).collect();
        Ok(Some(Function {
            name,
            entry,
            size: size.min(u32::MAX as u64) as u32,
            file,
            line,
            ret,
            params,
            flags: 0,
        }))
    }

    fn params(
        &mut self,
        of: UnitOffset,
        entry: u64,
        enums: &mut Vec<EnumType>,
    ) -> Result<Vec<FoundParam>, gimli::Error> {
        let frame_base = self.frame_base(of)?;
        let mut params = Vec::new();
        for_each_child(
            self.unit,
            Some(of),
            Some(gimli::DW_TAG_formal_parameter),
            |die| {
                let origin = self.reference(die.attr_value(gimli::DW_AT_abstract_origin)?);
                let named = match origin {
                    Some(o) if die.attr_value(gimli::DW_AT_name)?.is_none() => {
                        self.unit.entry(o)?
                    }
                    _ => die.clone(),
                };
                let name = self
                    .name(&named)?
                    .unwrap_or_else(|| format!("arg{}", params.len()));
                let ty = self.type_of(&named, enums)?;
                let (loc, ref_to) = self.location_at(die, entry, frame_base)?;
                params.push(FoundParam {
                    param: Param { name, ty, loc },
                    ref_to,
                });
                Ok(())
            },
        )?;
        Ok(params)
    }

    /// Offset from the stack pointer at entry of what DW_OP_fbreg is relative to.
    fn frame_base(&self, of: UnitOffset) -> Result<Option<i64>, gimli::Error> {
        let Some(op) = self.frame_base_op(&self.unit.entry(of)?)? else {
            return Ok(None);
        };
        Ok(match op {
            // gcc: the CFA, which at entry is rsp + 8 (past the return address).
            gimli::Operation::CallFrameCFA => Some(8),
            gimli::Operation::Register { register } if register.0 == 7 => Some(0),
            gimli::Operation::RegisterOffset {
                register, offset, ..
            } if register.0 == 7 => Some(offset),
            // rbp after `push rbp; mov rbp, rsp`.
            gimli::Operation::Register { register } if register.0 == 6 => Some(-8),
            _ => None,
        })
    }

    /// The first operation of a subprogram's `DW_AT_frame_base`, if it has one.
    fn frame_base_op(
        &self,
        die: &Die<'a, '_>,
    ) -> Result<Option<gimli::Operation<R<'a>>>, gimli::Error> {
        let Some(AttributeValue::Exprloc(expr)) = die.attr_value(gimli::DW_AT_frame_base)? else {
            return Ok(None);
        };
        let mut r = expr.0;
        gimli::Operation::parse(&mut r, self.unit.encoding()).map(Some)
    }

    /// Where a parameter is at `entry`: its location expression, or the one of its location
    /// list that covers `entry`; for [`Location::CallSite`], the DIE its call sites name.
    fn location_at(
        &self,
        die: &Die<'a, '_>,
        entry: u64,
        frame_base: Option<i64>,
    ) -> Result<(Location, Option<UnitOffset>), gimli::Error> {
        let Some(v) = die.attr_value(gimli::DW_AT_location)? else {
            let constant = die
                .attr_value(gimli::DW_AT_const_value)?
                .and_then(|v| match v {
                    AttributeValue::Sdata(v) => i32::try_from(v).ok(),
                    v => v.udata_value().and_then(|v| i32::try_from(v).ok()),
                });
            return Ok((constant.map_or(Location::None, Location::Const), None));
        };
        let expr = match v {
            AttributeValue::Exprloc(e) => Some(e),
            v => {
                let mut found = None;
                if let Some(mut locs) = self.dwarf.attr_locations(self.unit, v)? {
                    while let Some(l) = locs.next()? {
                        if l.range.begin <= entry && entry < l.range.end {
                            found = Some(l.data);
                            break;
                        }
                    }
                }
                found
            }
        };
        let Some(expr) = expr else {
            return Ok((Location::None, None));
        };
        if let Some(r) = parameter_ref(expr, self.unit.encoding()) {
            return Ok((Location::CallSite, Some(r)));
        }
        Ok((self.simple_location(expr, frame_base), None))
    }

    /// Adds what this unit's call sites say of the parameters in `self.param_refs` (as gdb
    /// reads a `DW_OP_GNU_parameter_ref`: the caller's `DW_TAG_call_site` whose return
    /// address is the callee's, its parameter naming the same DIE, its value expression).
    fn call_site_values(&self, out: &mut Vec<CallSiteValue>) -> Result<(), gimli::Error> {
        let mut by_ref: HashMap<UnitOffset, Vec<(u64, u16)>> = HashMap::new();
        for &(callee, param, r) in &self.param_refs {
            by_ref.entry(r).or_default().push((callee, param));
        }
        let mut cursor = self.unit.entries();
        let mut return_pc = None;
        // The subprograms the walk is in: their depth, and whether their frame base is the
        // CFA (a call site's `DW_OP_fbreg` is relative to its caller's).
        let (mut depth, mut callers) = (0isize, Vec::<(isize, bool)>::new());
        while let Some((delta, die)) = cursor.next_dfs()? {
            depth += delta;
            while callers.last().is_some_and(|&(d, _)| d >= depth) {
                callers.pop();
            }
            match die.tag() {
                gimli::DW_TAG_subprogram => {
                    let base = self.frame_base_op(die)?;
                    let cfa = matches!(base, Some(gimli::Operation::CallFrameCFA));
                    callers.push((depth, cfa));
                }
                gimli::DW_TAG_call_site | gimli::DW_TAG_GNU_call_site => {
                    // DWARF 5 names the return address; GNU's DWARF 4 form puts it in low_pc.
                    // A tail call has neither: its callee returns elsewhere.
                    let at = die
                        .attr_value(gimli::DW_AT_call_return_pc)?
                        .or(die.attr_value(gimli::DW_AT_low_pc)?);
                    return_pc = match at {
                        Some(v) => self.dwarf.attr_address(self.unit, v)?,
                        None => None,
                    };
                }
                gimli::DW_TAG_call_site_parameter | gimli::DW_TAG_GNU_call_site_parameter => {
                    let Some(return_pc) = return_pc else { continue };
                    let named = self
                        .reference(die.attr_value(gimli::DW_AT_call_parameter)?)
                        .or(self.reference(die.attr_value(gimli::DW_AT_abstract_origin)?));
                    let Some(callees) = named.and_then(|r| by_ref.get(&r)) else {
                        continue;
                    };
                    let value = die
                        .attr_value(gimli::DW_AT_call_value)?
                        .or(die.attr_value(gimli::DW_AT_GNU_call_site_value)?);
                    let Some(AttributeValue::Exprloc(expr)) = value else {
                        continue;
                    };
                    let frame_base_is_cfa = callers.last().is_some_and(|&(_, cfa)| cfa);
                    let caller_cfa = || {
                        // The rule in effect at the call instruction, which ends at the return
                        // address.
                        let cfa = frame_base_is_cfa.then(|| self.cfi.cfa_at(return_pc - 1));
                        cfa.flatten()
                    };
                    let loc = call_value(expr, self.unit.encoding(), self.absolute, caller_cfa);
                    for &(callee, param) in callees {
                        out.push(CallSiteValue {
                            return_pc,
                            callee,
                            param,
                            loc,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn simple_location(&self, expr: gimli::Expression<R<'a>>, frame_base: Option<i64>) -> Location {
        if let Some(v) = constant_expression(expr, self.unit.encoding(), self.absolute) {
            return Location::Const(v);
        }
        if let Some(loc) = entry_value_expression(expr, self.unit.encoding()) {
            return loc;
        }
        let mut r = expr.0;
        let mut regs = Vec::new();
        let mut first = None;
        while !r.is_empty() {
            let Ok(op) = gimli::Operation::parse(&mut r, self.unit.encoding()) else {
                return Location::None;
            };
            match op {
                gimli::Operation::Register { register } => regs.push(register.0),
                gimli::Operation::FrameOffset { offset } if first.is_none() && r.is_empty() => {
                    return frame_base
                        .map_or(Location::None, |fb| Location::Stack((fb + offset) as i32));
                }
                gimli::Operation::RegisterOffset {
                    register, offset, ..
                } if register.0 == 7 && r.is_empty() => {
                    return Location::Stack(offset as i32);
                }
                gimli::Operation::Piece { .. } => {}
                _ => return Location::None,
            }
            first.get_or_insert(());
        }
        match regs[..] {
            [a] => Location::Reg(a),
            [a, b] => Location::RegPair(a, b),
            _ => Location::None,
        }
    }

    /// The type named by a DIE's DW_AT_type (void if none).
    fn type_of(
        &mut self,
        die: &Die<'a, '_>,
        enums: &mut Vec<EnumType>,
    ) -> Result<TypeDesc, gimli::Error> {
        match self.reference(die.attr_value(gimli::DW_AT_type)?) {
            Some(off) => self.resolve(off, enums, 0),
            None if die.attr_value(gimli::DW_AT_type)?.is_some() => Ok(unknown()),
            None => Ok(TypeDesc::void()),
        }
    }

    fn resolve(
        &mut self,
        off: UnitOffset,
        enums: &mut Vec<EnumType>,
        depth: u32,
    ) -> Result<TypeDesc, gimli::Error> {
        if let Some(t) = self.types.get(&off) {
            return Ok(t.clone());
        }
        if depth > 16 {
            return Ok(unknown());
        }
        let die = self.unit.entry(off)?;
        let name = self.name(&die)?;
        let size = Self::udata(die.attr_value(gimli::DW_AT_byte_size)?).unwrap_or(0);
        let inner = self.reference(die.attr_value(gimli::DW_AT_type)?);
        let mut sub = |me: &mut Self| -> Result<TypeDesc, gimli::Error> {
            match inner {
                Some(i) => me.resolve(i, enums, depth + 1),
                None => Ok(TypeDesc::void()),
            }
        };
        let t = match die.tag() {
            gimli::DW_TAG_base_type => {
                let enc = die.attr_value(gimli::DW_AT_encoding)?;
                let w = size as u8;
                let class = match enc {
                    Some(AttributeValue::Encoding(e)) => match e {
                        gimli::DW_ATE_boolean => Class::Bool,
                        gimli::DW_ATE_signed | gimli::DW_ATE_signed_char => Class::Signed(w),
                        gimli::DW_ATE_unsigned
                        | gimli::DW_ATE_unsigned_char
                        | gimli::DW_ATE_UTF => Class::Unsigned(w),
                        gimli::DW_ATE_float => Class::Float(w),
                        _ => Class::Unknown,
                    },
                    _ => Class::Unknown,
                };
                TypeDesc {
                    c_type: name.unwrap_or_else(|| "?".into()),
                    class,
                }
            }
            gimli::DW_TAG_typedef => {
                let t = sub(self)?;
                TypeDesc {
                    c_type: name.unwrap_or(t.c_type),
                    class: t.class,
                }
            }
            gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => {
                let t = sub(self)?;
                let q = match die.tag() {
                    gimli::DW_TAG_const_type => "const",
                    gimli::DW_TAG_volatile_type => "volatile",
                    gimli::DW_TAG_restrict_type => "restrict",
                    _ => "_Atomic",
                };
                let c_type = if t.c_type.ends_with('*') {
                    format!("{} {q}", t.c_type)
                } else {
                    format!("{q} {}", t.c_type)
                };
                TypeDesc {
                    c_type,
                    class: t.class,
                }
            }
            gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => {
                let target = match inner {
                    Some(i) => Some(self.pointee(i)?),
                    None => None,
                };
                let t = sub(self)?;
                let class = match target {
                    Some(Pointee::Char) => Class::CharPtr,
                    Some(Pointee::Struct(n)) => Class::StructPtr(n),
                    _ => Class::Pointer,
                };
                let c_type = if t.c_type.contains("(*)") {
                    t.c_type
                } else if t.c_type.ends_with('*') {
                    format!("{}*", t.c_type)
                } else {
                    format!("{} *", t.c_type)
                };
                TypeDesc { c_type, class }
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_class_type => {
                let kw = if die.tag() == gimli::DW_TAG_union_type {
                    "union"
                } else {
                    "struct"
                };
                TypeDesc {
                    c_type: format!("{kw} {}", name.as_deref().unwrap_or("<anonymous>")),
                    class: Class::StructByValue(size.min(u16::MAX as u64) as u16),
                }
            }
            gimli::DW_TAG_enumeration_type => {
                let table = self.enum_table(off, enums)?;
                TypeDesc {
                    c_type: format!("enum {}", name.as_deref().unwrap_or("<anonymous>")),
                    class: Class::Enum(table),
                }
            }
            gimli::DW_TAG_subroutine_type => {
                let t = sub(self)?;
                TypeDesc {
                    c_type: format!("{} (*)()", t.c_type),
                    class: Class::Pointer,
                }
            }
            gimli::DW_TAG_array_type => {
                let t = sub(self)?;
                TypeDesc {
                    c_type: format!("{}[]", t.c_type),
                    class: Class::Pointer,
                }
            }
            _ => unknown(),
        };
        self.types.insert(off, t.clone());
        Ok(t)
    }

    /// What a pointer points to, looking through typedefs and qualifiers.
    fn pointee(&self, off: UnitOffset) -> Result<Pointee, gimli::Error> {
        let die = self.unit.entry(self.strip(off)?)?;
        Ok(match die.tag() {
            gimli::DW_TAG_base_type => {
                let is_char = matches!(
                    die.attr_value(gimli::DW_AT_encoding)?,
                    Some(AttributeValue::Encoding(
                        gimli::DW_ATE_signed_char | gimli::DW_ATE_unsigned_char
                    ))
                ) && self.name(&die)?.is_some_and(|n| n == "char");
                if is_char {
                    Pointee::Char
                } else {
                    Pointee::Other
                }
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                let kw = if die.tag() == gimli::DW_TAG_union_type {
                    "union"
                } else {
                    "struct"
                };
                match self.name(&die)? {
                    Some(n) => Pointee::Struct(format!("{kw} {n}")),
                    None => Pointee::Other,
                }
            }
            _ => Pointee::Other,
        })
    }

    fn enum_table(
        &mut self,
        off: UnitOffset,
        enums: &mut Vec<EnumType>,
    ) -> Result<u32, gimli::Error> {
        if let Some(&t) = self.enums.get(&off) {
            return Ok(t);
        }
        let mut values = Vec::new();
        for_each_child(self.unit, Some(off), Some(gimli::DW_TAG_enumerator), |e| {
            let Some(name) = self.name(e)? else {
                return Ok(());
            };
            let v = match e.attr_value(gimli::DW_AT_const_value)? {
                Some(AttributeValue::Sdata(v)) => v,
                Some(AttributeValue::Udata(v)) => v as i64,
                Some(AttributeValue::Data1(v)) => v as i8 as i64,
                Some(AttributeValue::Data2(v)) => v as i16 as i64,
                Some(AttributeValue::Data4(v)) => v as i32 as i64,
                Some(AttributeValue::Data8(v)) => v as i64,
                _ => return Ok(()),
            };
            values.push((v, name));
            Ok(())
        })?;
        values.sort();
        values.dedup_by(|a, b| a.0 == b.0);
        let t = enums.len() as u32;
        enums.push(EnumType { values });
        self.enums.insert(off, t);
        Ok(t)
    }

    /// Size of a type (following typedefs/qualifiers; arrays as count x element).
    fn type_size(&self, mut off: UnitOffset) -> Result<u64, gimli::Error> {
        for _ in 0..16 {
            let die = self.unit.entry(off)?;
            if let Some(s) = Self::udata(die.attr_value(gimli::DW_AT_byte_size)?) {
                return Ok(s);
            }
            let inner = self.reference(die.attr_value(gimli::DW_AT_type)?);
            if die.tag() == gimli::DW_TAG_array_type {
                let elem = match inner {
                    Some(i) => self.type_size(i)?,
                    None => 0,
                };
                let mut count = 1u64;
                for_each_child(self.unit, Some(off), None, |e| {
                    if let Some(c) = Self::udata(e.attr_value(gimli::DW_AT_count)?) {
                        count *= c;
                    } else if let Some(u) = Self::udata(e.attr_value(gimli::DW_AT_upper_bound)?) {
                        count *= u + 1;
                    }
                    Ok(())
                })?;
                return Ok(count * elem);
            }
            if die.tag() == gimli::DW_TAG_pointer_type {
                return Ok(8);
            }
            match inner {
                Some(i) => off = i,
                None => return Ok(0),
            }
        }
        Ok(0)
    }

    /// A struct's layout; members of anonymous struct/union members are flattened in.
    fn layout(&self, off: UnitOffset) -> Result<Layout, gimli::Error> {
        let die = self.unit.entry(off)?;
        let mut layout = Layout {
            size: Self::udata(die.attr_value(gimli::DW_AT_byte_size)?).unwrap_or(0),
            ..Default::default()
        };
        self.members(off, 0, &mut layout, 0)?;
        Ok(layout)
    }

    fn members(
        &self,
        off: UnitOffset,
        base: u64,
        layout: &mut Layout,
        depth: u32,
    ) -> Result<(), gimli::Error> {
        if depth > 4 {
            return Ok(());
        }
        for_each_child(self.unit, Some(off), Some(gimli::DW_TAG_member), |m| {
            let at =
                base + Self::udata(m.attr_value(gimli::DW_AT_data_member_location)?).unwrap_or(0);
            let ty = self.reference(m.attr_value(gimli::DW_AT_type)?);
            match self.name(m)? {
                Some(name) => {
                    let size = match ty {
                        Some(t) => self.type_size(t)?,
                        None => 0,
                    };
                    layout.members.entry(name).or_insert((at, size));
                }
                None => {
                    if let Some(t) = ty {
                        let t = self.strip(t)?;
                        self.members(t, at, layout, depth + 1)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Looks through typedefs and qualifiers to the type they name.
    fn strip(&self, mut off: UnitOffset) -> Result<UnitOffset, gimli::Error> {
        for _ in 0..16 {
            let die = self.unit.entry(off)?;
            match die.tag() {
                gimli::DW_TAG_typedef
                | gimli::DW_TAG_const_type
                | gimli::DW_TAG_volatile_type
                | gimli::DW_TAG_restrict_type
                | gimli::DW_TAG_atomic_type => {
                    match self.reference(die.attr_value(gimli::DW_AT_type)?) {
                        Some(n) => off = n,
                        None => return Ok(off),
                    }
                }
                _ => return Ok(off),
            }
        }
        Ok(off)
    }
}

enum Pointee {
    Char,
    Struct(String),
    Other,
}

fn unknown() -> TypeDesc {
    TypeDesc {
        c_type: "?".into(),
        class: Class::Unknown,
    }
}

/// A parameter as [`UnitCtx::params`] finds it: the parameter, and for
/// [`Location::CallSite`] the DIE its call sites name.
struct FoundParam {
    param: Param,
    ref_to: Option<UnitOffset>,
}

/// A constant as one operation (`DW_OP_lit*`, `DW_OP_const*`, and `DW_OP_addr` if
/// `absolute`), if it fits in 32 bits sign-extended (kernel addresses do).
fn constant_op<R: gimli::Reader>(op: &gimli::Operation<R>, absolute: bool) -> Option<i32> {
    match *op {
        gimli::Operation::UnsignedConstant { value } => i32::try_from(value).ok(),
        gimli::Operation::SignedConstant { value } => i32::try_from(value).ok(),
        gimli::Operation::Address { address } if absolute => i32::try_from(address as i64).ok(),
        _ => None,
    }
}

/// The operation of a one-operation value: `OP; DW_OP_stack_value`.
fn stack_value<R: gimli::Reader>(
    expr: gimli::Expression<R>,
    encoding: gimli::Encoding,
) -> Option<gimli::Operation<R>> {
    let mut r = expr.0;
    let op = gimli::Operation::parse(&mut r, encoding).ok()?;
    match gimli::Operation::parse(&mut r, encoding).ok()? {
        gimli::Operation::StackValue if r.is_empty() => Some(op),
        _ => None,
    }
}

/// The value of a constant location expression (a constant or an address, then
/// `DW_OP_stack_value`), if it is one and fits in 32 bits (see [`constant_op`]).
fn constant_expression<R: gimli::Reader>(
    expr: gimli::Expression<R>,
    encoding: gimli::Encoding,
    absolute: bool,
) -> Option<i32> {
    constant_op(&stack_value(expr, encoding)?, absolute)
}

/// A value computed from one register at the entry, then `DW_OP_stack_value`: the
/// register's entry value (`DW_OP_entry_value(DW_OP_regN)`, at the entry the register
/// itself) or the register plus an offset (`DW_OP_bregN off`).
fn entry_value_expression<R: gimli::Reader>(
    expr: gimli::Expression<R>,
    encoding: gimli::Encoding,
) -> Option<Location> {
    match stack_value(expr, encoding)? {
        gimli::Operation::EntryValue { mut expression } => {
            match gimli::Operation::parse(&mut expression, encoding).ok()? {
                gimli::Operation::Register { register } if expression.is_empty() => {
                    Some(Location::Reg(register.0))
                }
                _ => None,
            }
        }
        gimli::Operation::RegisterOffset {
            register, offset, ..
        } => Some(Location::RegOffset(register.0, i32::try_from(offset).ok()?)),
        _ => None,
    }
}

/// The parameter DIE of a `DW_OP_GNU_parameter_ref; DW_OP_stack_value` expression: a
/// parameter its `.isra` clone does not receive.
fn parameter_ref(expr: gimli::Expression<R<'_>>, encoding: gimli::Encoding) -> Option<UnitOffset> {
    match stack_value(expr, encoding)? {
        gimli::Operation::ParameterRef { offset } => Some(offset),
        _ => None,
    }
}

/// Where the value of a call site's `DW_AT_call_value` (an expression evaluated in the
/// caller at the call) is at the callee's entry: every register is as it was at the call
/// but the stack pointer, 8 lower (the return address). Read: a constant; a register plus an
/// offset (`DW_OP_bregN`), or the caller's frame base (the CFA, `caller_cfa`: a register
/// plus an offset at the call) plus an offset (`DW_OP_fbreg`); or the word stored at either
/// (then `DW_OP_deref`). Not read ([`Location::None`]): what needs the caller's own entry
/// values, or arithmetic.
fn call_value<R: gimli::Reader>(
    expr: gimli::Expression<R>,
    encoding: gimli::Encoding,
    absolute: bool,
    caller_cfa: impl FnOnce() -> Option<(u16, i64)>,
) -> Location {
    let mut r = expr.0;
    let Ok(op) = gimli::Operation::parse(&mut r, encoding) else {
        return Location::None;
    };
    if r.is_empty() {
        if let Some(v) = constant_op(&op, absolute) {
            return Location::Const(v);
        }
    }
    // The caller's register plus an offset, made relative to the callee's entry.
    let base = match op {
        gimli::Operation::RegisterOffset {
            register, offset, ..
        } => Some((register.0, offset)),
        gimli::Operation::FrameOffset { offset } => {
            caller_cfa().map(|(reg, cfa)| (reg, cfa + offset))
        }
        _ => None,
    };
    let Some((reg, off)) = base else {
        return Location::None;
    };
    let off = if reg == crate::arch::RSP {
        off + 8
    } else {
        off
    };
    let Ok(off) = i32::try_from(off) else {
        return Location::None;
    };
    if r.is_empty() {
        return match (reg, off) {
            (reg, 0) if reg != crate::arch::RSP => Location::Reg(reg),
            (reg, off) => Location::RegOffset(reg, off),
        };
    }
    match gimli::Operation::parse(&mut r, encoding) {
        Ok(gimli::Operation::Deref {
            size: 8,
            space: false,
            ..
        }) if r.is_empty() => match reg {
            crate::arch::RSP => Location::Stack(off),
            reg => Location::Memory(reg, off),
        },
        _ => Location::None,
    }
}

/// SysV x86-64 locations of integer-class parameters, in order: rdi, rsi, rdx, rcx, r8, r9,
/// then the stack (the first stack argument at rsp + 8 at entry). An empty struct (size 0,
/// e.g. `struct vm_userfaultfd_ctx` without userfaultfd) takes no register and no stack slot.
/// A function that returns a struct of more than 16 bytes gets the address to write it to
/// in rdi, before its parameters (`build_open_how`).
pub(crate) fn abi_locations(params: &mut [Param], ret: &Class) {
    const REGS: [u16; 6] = crate::arch::INTEGER_ARGS;
    let mut next = usize::from(matches!(ret, Class::StructByValue(n) if *n > 16));
    let mut stack = 8i32;
    for p in params {
        let size = match p.ty.class {
            Class::StructByValue(n) => n as usize,
            Class::Float(_) => {
                p.loc = Location::None;
                continue;
            }
            _ => 8,
        };
        if size == 0 {
            p.loc = Location::None;
            continue;
        }
        let words = size.div_ceil(8).max(1);
        p.loc = if size <= 16 && next + words <= REGS.len() {
            let loc = if words == 1 {
                Location::Reg(REGS[next])
            } else {
                Location::RegPair(REGS[next], REGS[next + 1])
            };
            next += words;
            loc
        } else {
            let loc = Location::Stack(stack);
            stack += (words * 8) as i32;
            loc
        };
    }
}

/// True for gcc's specialised copies, which do not follow the ABI.
pub(crate) fn is_clone(symbol: &str) -> bool {
    [".isra.", ".constprop.", ".part.", ".cold", ".localalias"]
        .iter()
        .any(|s| symbol.contains(s))
}

/// Marks clones, applies ABI locations to the others, and names each function by its symbol.
pub(crate) fn finish_function(f: &mut Function, symbol: Option<&str>) {
    if let Some(sym) = symbol {
        if sym != f.name && sym.starts_with(f.name.as_str()) {
            f.name = sym.to_owned();
        }
    }
    if is_clone(&f.name) {
        f.flags |= flags::CLONE;
    } else {
        abi_locations(&mut f.params, &f.ret.class);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TypeDesc;

    fn param(class: Class) -> Param {
        Param {
            name: "p".into(),
            ty: TypeDesc {
                c_type: "t".into(),
                class,
            },
            loc: Location::None,
        }
    }

    #[test]
    fn constant_expressions_are_values() {
        let encoding = gimli::Encoding {
            address_size: 8,
            format: gimli::Format::Dwarf32,
            version: 5,
        };
        let expr =
            |b: &'static [u8]| gimli::Expression(gimli::EndianSlice::new(b, gimli::LittleEndian));
        // DW_OP_const1u 32; DW_OP_stack_value, DW_OP_lit1; DW_OP_stack_value.
        assert_eq!(
            constant_expression(expr(&[0x08, 32, 0x9f]), encoding, true),
            Some(32)
        );
        assert_eq!(
            constant_expression(expr(&[0x31, 0x9f]), encoding, true),
            Some(1)
        );
        // DW_OP_const1s -3; DW_OP_stack_value.
        assert_eq!(
            constant_expression(expr(&[0x09, 0xfd, 0x9f]), encoding, true),
            Some(-3)
        );
        // DW_OP_const1u 32 alone is an address, and DW_OP_reg5 a register.
        assert_eq!(constant_expression(expr(&[0x08, 32]), encoding, true), None);
        assert_eq!(constant_expression(expr(&[0x55]), encoding, true), None);
    }

    const ENCODING: gimli::Encoding = gimli::Encoding {
        address_size: 8,
        format: gimli::Format::Dwarf32,
        version: 5,
    };

    fn expr(b: &'static [u8]) -> gimli::Expression<R<'static>> {
        gimli::Expression(gimli::EndianSlice::new(b, RunTimeEndian::Little))
    }

    /// The location forms gcc gives the kernel's clones at their entry, each as the kernel's
    /// DWARF spells it (`llvm-dwarfdump`).
    #[test]
    fn the_location_forms_of_clones_at_their_entry() {
        // DW_OP_addr 0xffffffff82a0c040; DW_OP_stack_value: an address (a `.constprop`
        // clone's pointer to a static object) sign-extends from 32 bits; not in a file that
        // moves when loaded.
        let addr = expr(&[0x03, 0x40, 0xc0, 0xa0, 0x82, 0xff, 0xff, 0xff, 0xff, 0x9f]);
        assert_eq!(
            constant_expression(addr, ENCODING, true),
            Some(0x82a0c040u32 as i32)
        );
        assert_eq!(constant_expression(addr, ENCODING, false), None);
        // DW_OP_entry_value(DW_OP_reg4); DW_OP_stack_value: at the entry, rsi itself.
        assert_eq!(
            entry_value_expression(expr(&[0xa3, 0x01, 0x54, 0x9f]), ENCODING),
            Some(Location::Reg(4))
        );
        // DW_OP_breg1 4088; DW_OP_stack_value: rdx + 4088.
        assert_eq!(
            entry_value_expression(expr(&[0x71, 0xf8, 0x1f, 0x9f]), ENCODING),
            Some(Location::RegOffset(1, 4088))
        );
        // DW_OP_breg1 4088 alone is a memory location, not a value.
        assert_eq!(
            entry_value_expression(expr(&[0x71, 0xf8, 0x1f]), ENCODING),
            None
        );
        // DW_OP_GNU_parameter_ref 0xa1f4; DW_OP_stack_value (`mas_new_ma_node.isra.0`'s
        // `b_node`): only the call sites know it.
        let r = expr(&[0xfa, 0xf4, 0xa1, 0x00, 0x00, 0x9f]);
        assert_eq!(parameter_ref(r, ENCODING), Some(UnitOffset(0xa1f4)));
        assert_eq!(parameter_ref(expr(&[0x55]), ENCODING), None);
    }

    /// A call site's value, read at the callee's entry.
    #[test]
    fn call_site_values_at_the_callees_entry() {
        let value = |b| call_value(expr(b), ENCODING, true, || Some((6, 16)));
        // DW_OP_breg12 0: r12 as it was at the call, unchanged at the entry.
        assert_eq!(value(&[0x7c, 0x00]), Location::Reg(12));
        // DW_OP_breg3 -2097152: rbx - 2 MiB.
        assert_eq!(
            value(&[0x73, 0x80, 0x80, 0x80, 0x7f]),
            Location::RegOffset(3, -2097152)
        );
        // DW_OP_breg7 16: the caller's rsp is 8 above the callee's (the return address).
        assert_eq!(value(&[0x77, 0x10]), Location::RegOffset(7, 24));
        // DW_OP_lit3.
        assert_eq!(value(&[0x33]), Location::Const(3));
        // DW_OP_fbreg -120, the caller's CFA being rbp + 16 at the call: rbp - 104.
        assert_eq!(value(&[0x91, 0x88, 0x7f]), Location::RegOffset(6, -104));
        // The word there (DW_OP_deref), and the word at rsp + 16 in the caller.
        assert_eq!(value(&[0x91, 0x88, 0x7f, 0x06]), Location::Memory(6, -104));
        assert_eq!(value(&[0x77, 0x10, 0x06]), Location::Stack(24));
        let rsp_cfa = call_value(expr(&[0x91, 0x88, 0x7f]), ENCODING, true, || Some((7, 48)));
        assert_eq!(rsp_cfa, Location::RegOffset(7, 48 - 120 + 8));
        // What the entry cannot read: the caller's own entry value, arithmetic.
        assert_eq!(value(&[0xa3, 0x01, 0x55]), Location::None);
        assert_eq!(value(&[0x75, 0x00, 0x33, 0x1a]), Location::None);
    }

    #[test]
    fn a_struct_returned_in_memory_takes_rdi_for_its_address() {
        // struct open_how build_open_how(int flags, umode_t mode): 24 bytes, in memory.
        let mut params = vec![param(Class::Signed(4)), param(Class::Unsigned(2))];
        abi_locations(&mut params, &Class::StructByValue(24));
        let locs: Vec<Location> = params.iter().map(|p| p.loc).collect();
        assert_eq!(locs, [Location::Reg(4), Location::Reg(1)]);
        abi_locations(&mut params, &Class::StructByValue(16));
        assert_eq!(
            params[0].loc,
            Location::Reg(5),
            "16 bytes come back in rax:rdx"
        );
    }

    #[test]
    fn an_empty_struct_takes_no_register_and_no_stack_slot() {
        // vma_merge: seven pointers, then an empty struct vm_userfaultfd_ctx, then anon_name.
        let mut params: Vec<Param> = (0..7).map(|_| param(Class::Pointer)).collect();
        params.push(param(Class::StructByValue(0)));
        params.push(param(Class::Pointer));
        abi_locations(&mut params, &Class::Pointer);
        let locs: Vec<Location> = params.iter().map(|p| p.loc).collect();
        assert_eq!(
            locs[5..],
            [
                Location::Reg(9),
                Location::Stack(8),
                Location::None,
                Location::Stack(16)
            ]
        );
    }
}
