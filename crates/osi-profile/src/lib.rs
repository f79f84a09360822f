//! osi-profile: what rrr's tracer needs to know about a kernel (or a static user binary), read
//! from its DWARF with gimli: every function's entry, parameters, types and their locations at
//! entry, return types, and the OS-introspection facts (struct offsets, symbol addresses) that
//! name threads. Stored in a compact format a tracer memory-maps and uses in place.

mod error;
mod format;
mod model;

pub use error::ProfileError;
pub use format::{ClassRef, FunctionRef, ParamRef, Profile, FORMAT_VERSION};
pub use model::{flags, Class, EnumType, Function, Location, Param, ProfileData, TypeDesc};
