//! The one-function-per-line text form: `0x<entry>\t<name>\t<return type>\t<params>`, each
//! parameter `<type> <name>@<loc>`, separated by `;`.

use std::fmt::Write;

use crate::format::{FunctionRef, Profile};
use crate::model::Location;

/// Name of a DWARF x86-64 register number.
pub fn reg_name(reg: u16) -> &'static str {
    const NAMES: [&str; 17] = [
        "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "rip",
    ];
    match reg {
        0..=16 => NAMES[reg as usize],
        17..=32 => [
            "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
            "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
        ][(reg - 17) as usize],
        58 => "fs_base",
        59 => "gs_base",
        _ => "reg?",
    }
}

/// A location as the TSV writes it: `rdi`, `rsi:rdx`, `stack+8`, `none`.
pub fn location(loc: Location) -> String {
    match loc {
        Location::Reg(r) => reg_name(r).to_owned(),
        Location::RegPair(a, b) => format!("{}:{}", reg_name(a), reg_name(b)),
        Location::Stack(off) if off >= 0 => format!("stack+{off}"),
        Location::Stack(off) => format!("stack{off}"),
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
