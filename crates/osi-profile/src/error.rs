//! Errors, each naming its cause and what to do about it.

use std::path::{Path, PathBuf};

/// Why a profile could not be built, read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The input is not an ELF file.
    #[error(
        "{0}: not an ELF file ({1}); pass the kernel's `vmlinux` (not bzImage) or an ELF binary"
    )]
    NotElf(PathBuf, String),
    /// The ELF is truncated or malformed.
    #[error("{0}: the ELF file is truncated or malformed ({1}); copy or rebuild it")]
    BadElf(PathBuf, String),
    /// The ELF has neither DWARF nor symbols.
    #[error("{0}: stripped (no .symtab and no .debug_info); use the unstripped vmlinux from the build tree (or the -dbg package)")]
    Stripped(PathBuf),
    /// The ELF has symbols but no DWARF.
    #[error("{0}: no DWARF (.debug_info is missing); rebuild with CONFIG_DEBUG_INFO_DWARF5=y (or _DWARF4=y), CONFIG_DEBUG_INFO_REDUCED=n and CONFIG_DEBUG_INFO_SPLIT=n")]
    NoDwarf(PathBuf),
    /// Only split-DWARF skeleton units are present.
    #[error("{0}: split DWARF (only skeleton units; the .dwo files hold the types); rebuild with CONFIG_DEBUG_INFO_SPLIT=n (or without -gsplit-dwarf)")]
    SplitDwarf(PathBuf),
    /// A relocatable object whose debug sections need relocation.
    #[error("{0}: a relocatable object (ET_REL) whose debug sections need relocations; pass the linked vmlinux or executable, not a .o/.ko")]
    Relocatable(PathBuf),
    /// DWARF that gimli cannot read.
    #[error("{0}: malformed DWARF ({1}); rebuild the kernel, or report the compiler version")]
    Dwarf(PathBuf, String),
    /// Not an rrr profile.
    #[error("not an rrr profile (bad magic); create one with `rrr profile VMLINUX -o FILE`")]
    NotAProfile,
    /// The profile was written by another version of rrr.
    #[error("profile format version {found}, this rrr reads version {expected}; regenerate it with `rrr profile VMLINUX -o FILE`")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// A profile file is damaged.
    #[error("corrupt profile: {0}; regenerate it with `rrr profile VMLINUX -o FILE`")]
    Corrupt(&'static str),
}

impl ProfileError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ProfileError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
