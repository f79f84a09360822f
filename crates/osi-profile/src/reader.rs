//! Building a profile from an ELF file: DWARF on every core, symbols, deny-list, facts.

use std::path::Path;

use gimli::{EndianSlice, RunTimeEndian};

use crate::denylist::DenyList;
use crate::dwarf::{self, Extract};
use crate::elf::{self, Elf};
use crate::error::ProfileError;
use crate::facts;
use crate::model::{flags, Class, Function, ProfileData, TypeDesc};

/// How to build a profile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Functions not hooked by default.
    pub deny: DenyList,
    /// Mark every function as user-space code (for a stimulus binary).
    pub user: bool,
    /// Worker threads (0: one per core).
    pub threads: usize,
}

/// Reads the profile of the ELF file at `path`.
pub fn read(path: &Path, opts: &Options) -> Result<ProfileData, ProfileError> {
    let elf = Elf::open(path)?;
    let file = elf.parse()?;
    let dwarf_err = |e: gimli::Error| ProfileError::Dwarf(path.to_owned(), e.to_string());
    let sections = gimli::DwarfSections::load(|id| -> Result<_, gimli::Error> {
        Ok(elf::section_data(&file, id.name()))
    })
    .map_err(dwarf_err)?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, RunTimeEndian::Little));

    let mut headers = Vec::new();
    let mut units = dwarf.units();
    while let Some(h) = units.next().map_err(dwarf_err)? {
        headers.push(h);
    }
    let absolute = object::Object::kind(&file) == object::ObjectKind::Executable;
    let debug_frame = elf::section_data(&file, ".debug_frame");
    let eh_frame = elf::section_data(&file, ".eh_frame");
    let eh_frame_address = object::Object::section_by_name(&file, ".eh_frame")
        .map_or(0, |s| object::ObjectSection::address(&s));
    let cfi = crate::cfi::Cfi::new(&debug_frame, &eh_frame, eh_frame_address);
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, headers.len().max(1));
    // Units are interleaved across workers so big and small ones spread evenly.
    let parts: Vec<Result<Extract, gimli::Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (dwarf, headers, cfi) = (&dwarf, &headers, &cfi);
                let indices = (t..headers.len()).step_by(threads);
                s.spawn(move || dwarf::extract(dwarf, headers, indices, absolute, cfi))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("DWARF worker panicked"))
            .collect()
    });

    let mut data = ProfileData::default();
    let mut layouts = std::collections::BTreeMap::new();
    let (mut units_seen, mut skeletons) = (0, 0);
    for part in parts {
        let part = part.map_err(dwarf_err)?;
        units_seen += part.units;
        skeletons += part.skeleton_units;
        data.append(part.functions, part.enums);
        data.call_sites.extend(part.call_sites);
        for (k, v) in part.layouts {
            layouts.entry(k).or_insert(v);
        }
    }
    if units_seen > 0 && skeletons == units_seen {
        return Err(ProfileError::SplitDwarf(path.to_owned()));
    }

    let symbols = elf::function_symbols(&file);
    for f in &mut data.functions {
        dwarf::finish_function(f, symbols.get(&f.entry).map(|s| s.name.as_str()));
        if f.flags & flags::CLONE != 0 && f.ret.class != Class::Void && f.size > 0 {
            let code = elf::read_at(&file, f.entry, u64::from(f.size));
            if code.is_some_and(|c| crate::returns::returns_nothing(&c, f.entry)) {
                f.ret = TypeDesc::void();
            }
        }
    }
    // Functions only in the symbol table (assembly): by name, no parameters.
    let known: std::collections::HashSet<u64> = data.functions.iter().map(|f| f.entry).collect();
    for (&addr, sym) in &symbols {
        if !known.contains(&addr) {
            data.functions.push(Function {
                name: sym.name.clone(),
                entry: addr,
                size: sym.size.min(u32::MAX as u64) as u32,
                file: None,
                line: 0,
                ret: TypeDesc {
                    c_type: "?".into(),
                    class: Class::Unknown,
                },
                params: Vec::new(),
                flags: flags::SYMBOL_ONLY,
            });
        }
    }
    for f in &mut data.functions {
        if opts.deny.denies(&f.name) {
            f.flags |= flags::DENIED;
        }
        if opts.user {
            f.flags |= flags::USER;
        }
    }
    data.finish();
    facts::collect(&file, &layouts, &mut data);
    data.text_facts
        .insert(READER_FACT.to_owned(), READER_VERSION.to_string());
    Ok(data)
}

/// Bumped whenever the DWARF reader's output changes (locations, classes, names): a profile
/// made by another reader is stale ([`crate::Profile::is_current`]) and is built again.
/// 2: an empty struct parameter takes no register or stack slot; 3: constant locations; 4:
/// clones whose code returns nothing return void; 5: a struct returned in memory takes rdi;
/// 6: the reporting functions (`kasan_report`, ...) are never denied; 7: source files keep
/// their directory; 8: the parameters of `.isra` clones that their call sites pass
/// (`DW_OP_GNU_parameter_ref`), addresses, entry values and register-plus-offset values; 9:
/// the `thread_struct` and `irq_stack` facts.
pub const READER_VERSION: u32 = 9;

/// The text fact that records which reader made a profile.
pub(crate) const READER_FACT: &str = "osi.reader";
