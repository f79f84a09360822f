//! Opening the ELF: memory map, the checks that turn bad input into clear errors, the
//! function symbols, and reading initialised data by virtual address.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectKind, ObjectSection, ObjectSymbol, SymbolKind};

use crate::error::ProfileError;

/// A mapped ELF file.
pub(crate) struct Elf {
    pub path: PathBuf,
    map: memmap2::Mmap,
}

/// A function symbol.
#[derive(Clone, Debug)]
pub(crate) struct FuncSym {
    pub name: String,
    pub size: u64,
}

impl Elf {
    /// Maps `path`.
    pub fn open(path: &Path) -> Result<Self, ProfileError> {
        let file = std::fs::File::open(path).map_err(|e| ProfileError::io(path, e))?;
        // SAFETY: read-only map of an input the user gave us; if another process truncates
        // it while we read, SIGBUS is the accepted failure mode of every mmap-based reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ProfileError::io(path, e))?;
        Ok(Elf {
            path: path.to_owned(),
            map,
        })
    }

    /// Parses the object and checks it has what a profile needs.
    pub fn parse(&self) -> Result<object::File<'_>, ProfileError> {
        let bytes: &[u8] = &self.map;
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            return Err(ProfileError::NotElf(
                self.path.clone(),
                describe_magic(bytes),
            ));
        }
        let file = object::File::parse(bytes)
            .map_err(|e| ProfileError::BadElf(self.path.clone(), e.to_string()))?;
        // Every section's data must lie inside the file (a truncated copy fails here).
        for s in file.sections() {
            if s.file_range().is_some() && s.data().is_err() {
                return Err(ProfileError::BadElf(
                    self.path.clone(),
                    format!(
                        "section {} extends past the end of the file",
                        s.name().unwrap_or("?")
                    ),
                ));
            }
        }
        let has = |name: &str| file.section_by_name(name).is_some_and(|s| s.size() > 0);
        if !has(".debug_info") {
            let has_symbols = file.symbols().next().is_some();
            return Err(if has_symbols {
                ProfileError::NoDwarf(self.path.clone())
            } else {
                ProfileError::Stripped(self.path.clone())
            });
        }
        if file.kind() == ObjectKind::Relocatable
            && (has(".rela.debug_info") || has(".rel.debug_info"))
        {
            return Err(ProfileError::Relocatable(self.path.clone()));
        }
        Ok(file)
    }
}

fn describe_magic(bytes: &[u8]) -> String {
    if bytes.len() > 0x202 + 4 && &bytes[0x202..0x206] == b"HdrS" {
        "this is a bzImage".into()
    } else if bytes.starts_with(b"\x1f\x8b") {
        "gzip data".into()
    } else if bytes.is_empty() {
        "empty file".into()
    } else {
        "unknown format".into()
    }
}

/// A section's data, decompressed if needed.
pub(crate) fn section_data<'a>(file: &object::File<'a>, name: &str) -> Cow<'a, [u8]> {
    file.section_by_name(name)
        .and_then(|s| s.uncompressed_data().ok())
        .unwrap_or(Cow::Borrowed(&[]))
}

/// Function symbols by address (the first name seen at an address, globals preferred).
pub(crate) fn function_symbols(file: &object::File<'_>) -> BTreeMap<u64, FuncSym> {
    let mut out: BTreeMap<u64, (bool, FuncSym)> = BTreeMap::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.address() == 0 || sym.is_undefined() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let global = sym.is_global();
        let entry = FuncSym {
            name: name.to_owned(),
            size: sym.size(),
        };
        match out.get(&sym.address()) {
            Some((g, _)) if *g || !global => {}
            _ => {
                out.insert(sym.address(), (global, entry));
            }
        }
    }
    out.into_iter().map(|(a, (_, s))| (a, s)).collect()
}

/// Address and size of each of `names` that the symbol table has (first definition), in one
/// pass over the table.
pub(crate) fn symbols_named<'n>(
    file: &object::File<'_>,
    names: &[&'n str],
) -> BTreeMap<&'n str, (u64, u64)> {
    let mut out = BTreeMap::new();
    for sym in file.symbols() {
        let Ok(name) = sym.name() else { continue };
        if let Some(&n) = names.iter().find(|&&n| n == name) {
            out.entry(n).or_insert((sym.address(), sym.size()));
        }
    }
    out
}

/// `len` bytes of initialised data at virtual address `addr`.
pub(crate) fn read_at<'a>(file: &object::File<'a>, addr: u64, len: u64) -> Option<Vec<u8>> {
    for s in file.sections() {
        if addr >= s.address() && addr + len <= s.address() + s.size() {
            let data = s.data().ok()?;
            let off = (addr - s.address()) as usize;
            return data.get(off..off + len as usize).map(<[u8]>::to_vec);
        }
    }
    None
}
