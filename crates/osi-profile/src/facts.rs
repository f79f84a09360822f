//! OS-introspection facts: struct layouts from DWARF, symbol addresses and static data from
//! the ELF.

use std::collections::BTreeMap;

use crate::dwarf::Layout;
use crate::elf;
use crate::model::ProfileData;

/// Symbols whose addresses are facts (`addr.<name>`).
const SYMBOLS: &[&str] = &[
    "init_task",
    "__per_cpu_offset",
    "current_task",
    "pcpu_hot",
    "hardirq_stack_ptr",
    "finish_task_switch",
    "__switch_to",
    "__switch_to_asm",
    "init_uts_ns",
    "linux_banner",
    "init_stack",
    "do_syscall_64",
    "entry_SYSCALL_64",
];

/// Adds struct layouts, symbol addresses, per-CPU offsets, THREAD_SIZE and the version.
pub(crate) fn collect(
    file: &object::File<'_>,
    layouts: &BTreeMap<String, Layout>,
    data: &mut ProfileData,
) {
    let facts = &mut data.facts;
    for (name, l) in layouts {
        facts.insert(format!("sizeof.{name}"), l.size as i64);
        for (member, (off, size)) in &l.members {
            facts.insert(format!("{name}.{member}"), *off as i64);
            facts.insert(format!("sizeof.{name}.{member}"), *size as i64);
        }
    }
    let syms = elf::symbols_named(file, SYMBOLS);
    for (s, (addr, _)) in &syms {
        facts.insert(format!("addr.{s}"), *addr as i64);
    }
    // Per-CPU variables: offsets from the per-CPU base (GS), directly or inside pcpu_hot.
    for var in ["current_task", "hardirq_stack_ptr"] {
        let off = match (
            syms.get(var),
            syms.get("pcpu_hot"),
            facts.get(&format!("pcpu_hot.{var}")),
        ) {
            (Some((a, _)), _, _) => Some(*a as i64),
            (None, Some((base, _)), Some(m)) => Some(*base as i64 + m),
            _ => None,
        };
        if let Some(off) = off {
            facts.insert(format!("percpu.{var}"), off);
        }
    }
    let thread_size = match syms.get("init_stack") {
        Some((_, size)) if size.is_power_of_two() => Some(*size as i64),
        _ => facts.get("sizeof.thread_union").copied(),
    };
    if let Some(ts) = thread_size {
        facts.insert("thread_size".into(), ts);
    }
    if let Some((addr, _)) = syms.get("__per_cpu_offset") {
        if let Some(b) = elf::read_at(file, *addr, 8) {
            facts.insert(
                "per_cpu_offset_0".into(),
                u64::from_le_bytes(b.try_into().expect("8 bytes")) as i64,
            );
        }
    }
    // Version strings from static data.
    if let Some((addr, size)) = syms.get("linux_banner") {
        if let Some(b) = elf::read_at(file, *addr, (*size).clamp(1, 512)) {
            let s = c_string(&b);
            data.text_facts
                .insert("kernel.banner".into(), s.trim_end().to_owned());
        }
    }
    if let (Some((addr, _)), Some(name)) = (
        syms.get("init_uts_ns"),
        facts.get("uts_namespace.name").copied(),
    ) {
        for field in ["release", "version", "machine"] {
            if let Some(&off) = data.facts.get(&format!("new_utsname.{field}")) {
                let at = *addr + name as u64 + off as u64;
                if let Some(b) = elf::read_at(file, at, 65) {
                    data.text_facts
                        .insert(format!("kernel.{field}"), c_string(&b));
                }
            }
        }
    }
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
