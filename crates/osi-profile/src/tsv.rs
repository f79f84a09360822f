//! The one-function-per-line text form: `0x<entry>\t<name>\t<return type>\t<params>`, each
//! parameter `<type> <name>@<loc>`, separated by `;`.

use std::fmt::Write;

use crate::format::{FunctionRef, Profile};
use crate::model::Location;

/// A location as the TSV writes it: `rdi`, `rsi:rdx`, `stack+8`, `const3`, `rdi+8`,
/// `[rbp-8]`, `callsite`, `none`.
pub fn location(loc: Location) -> String {
    match loc {
        Location::Reg(r) => crate::arch::name(r).to_owned(),
        Location::RegPair(a, b) => format!("{}:{}", crate::arch::name(a), crate::arch::name(b)),
        Location::Stack(off) if off >= 0 => format!("stack+{off}"),
        Location::Stack(off) => format!("stack{off}"),
        Location::Const(v) => format!("const{v}"),
        Location::RegOffset(r, off) => format!("{}{off:+}", crate::arch::name(r)),
        Location::Memory(r, off) => format!("[{}{off:+}]", crate::arch::name(r)),
        Location::CallSite => "callsite".to_owned(),
        Location::None => "none".to_owned(),
    }
}

/// One function's line (without the newline).
pub fn line(f: &FunctionRef<'_>) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:#x}\t{}\t{}\t", f.entry(), f.name(), f.ret_type());
    for (i, p) in f.params().enumerate() {
        if i > 0 {
            s.push(';');
        }
        let _ = write!(s, "{} {}@{}", p.c_type(), p.name(), location(p.location()));
    }
    s
}

/// Every function's line, in entry order.
pub fn write_tsv(profile: &Profile, out: &mut impl std::io::Write) -> std::io::Result<()> {
    for f in profile.functions() {
        writeln!(out, "{}", line(&f))?;
    }
    Ok(())
}
