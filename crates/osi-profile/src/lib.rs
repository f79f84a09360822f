//! osi-profile: what rrr's tracer needs to know about a kernel (or a static user binary), read
//! from its DWARF with gimli: every function's entry, parameters, types and their locations at
//! entry, return types, and the OS-introspection facts (struct offsets, symbol addresses) that
//! name threads. Stored in a compact format a tracer memory-maps and uses in place.

pub mod arch;
mod cfi;
mod denylist;
mod dwarf;
mod elf;
mod error;
mod facts;
mod format;
mod kernelinfo;
mod model;
mod reader;
mod returns;
mod tsv;

pub use denylist::{DenyList, DEFAULT_DENY, REPORTING_FUNCTIONS};
pub use error::ProfileError;
pub use format::{ClassRef, FunctionRef, ParamRef, Profile, FORMAT_VERSION};
pub use kernelinfo::kernelinfo;
pub use model::{
    flags, CallSiteValue, Class, EnumType, Function, Location, Param, ProfileData, TypeDesc,
};
pub use reader::{read, Options, READER_VERSION};
pub use tsv::{line as tsv_line, location as tsv_location, write_tsv};

/// Builds the profile of `elf` and writes it atomically (temp file, then rename) to `out`.
pub fn build(
    elf: &std::path::Path,
    out: &std::path::Path,
    opts: &Options,
) -> Result<Profile, ProfileError> {
    write(&read(elf, opts)?, out)
}

/// Writes `data` atomically (temp file, then rename) to `out` and opens it.
pub fn write(data: &ProfileData, out: &std::path::Path) -> Result<Profile, ProfileError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        out.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("profile"),
        std::process::id()
    ));
    std::fs::write(&tmp, data.to_bytes()).map_err(|e| ProfileError::io(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| ProfileError::io(out, e))?;
    Profile::open(out)
}
