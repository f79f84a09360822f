//! PANDA's `kernelinfo.conf` (a GLib key file) for osi_linux, from a profile's facts: the
//! same keys PANDA's gdb-based extractor writes, computed from DWARF.

use std::fmt::Write;

use crate::format::Profile;

/// One key: its name and how it is computed from facts.
enum Key {
    /// A fact as is.
    Fact(&'static str, &'static str),
    /// The sum of two facts (a nested member: outer offset + inner offset).
    Sum(&'static str, &'static str, &'static str),
    /// The difference of two facts (offset relative to another member).
    Diff(&'static str, &'static str, &'static str),
}

const KEYS: &[Key] = &[
    Key::Fact("task.per_cpu_offsets_addr", "addr.__per_cpu_offset"),
    Key::Fact("task.per_cpu_offset_0_addr", "per_cpu_offset_0"),
    Key::Fact("task.current_task_addr", "percpu.current_task"),
    Key::Fact("task.init_addr", "addr.init_task"),
    Key::Fact("task.size", "sizeof.task_struct"),
    Key::Fact("task.tasks_offset", "task_struct.tasks"),
    Key::Fact("task.pid_offset", "task_struct.pid"),
    Key::Fact("task.tgid_offset", "task_struct.tgid"),
    Key::Fact("task.group_leader_offset", "task_struct.group_leader"),
    Key::Fact("task.thread_group_offset", "task_struct.thread_group"),
    Key::Fact("task.real_parent_offset", "task_struct.real_parent"),
    Key::Fact("task.parent_offset", "task_struct.parent"),
    Key::Fact("task.mm_offset", "task_struct.mm"),
    Key::Fact("task.stack_offset", "task_struct.stack"),
    Key::Fact("task.real_cred_offset", "task_struct.real_cred"),
    Key::Fact("task.cred_offset", "task_struct.cred"),
    Key::Fact("task.comm_offset", "task_struct.comm"),
    Key::Fact("task.comm_size", "sizeof.task_struct.comm"),
    Key::Fact("task.files_offset", "task_struct.files"),
    Key::Fact("task.start_time_offset", "task_struct.start_time"),
    Key::Fact("cred.uid_offset", "cred.uid"),
    Key::Fact("cred.gid_offset", "cred.gid"),
    Key::Fact("cred.euid_offset", "cred.euid"),
    Key::Fact("cred.egid_offset", "cred.egid"),
    Key::Fact("mm.size", "sizeof.mm_struct"),
    Key::Fact("mm.mmap_offset", "mm_struct.mmap"),
    Key::Fact("mm.pgd_offset", "mm_struct.pgd"),
    Key::Fact("mm.arg_start_offset", "mm_struct.arg_start"),
    Key::Fact("mm.start_brk_offset", "mm_struct.start_brk"),
    Key::Fact("mm.brk_offset", "mm_struct.brk"),
    Key::Fact("mm.start_stack_offset", "mm_struct.start_stack"),
    Key::Fact("vma.size", "sizeof.vm_area_struct"),
    Key::Fact("vma.vm_mm_offset", "vm_area_struct.vm_mm"),
    Key::Fact("vma.vm_start_offset", "vm_area_struct.vm_start"),
    Key::Fact("vma.vm_end_offset", "vm_area_struct.vm_end"),
    Key::Fact("vma.vm_next_offset", "vm_area_struct.vm_next"),
    Key::Fact("vma.vm_flags_offset", "vm_area_struct.vm_flags"),
    Key::Fact("vma.vm_file_offset", "vm_area_struct.vm_file"),
    Key::Sum("fs.f_path_dentry_offset", "file.f_path", "path.dentry"),
    Key::Sum("fs.f_path_mnt_offset", "file.f_path", "path.mnt"),
    Key::Fact("fs.f_pos_offset", "file.f_pos"),
    Key::Fact("fs.fdt_offset", "files_struct.fdt"),
    Key::Fact("fs.fdtab_offset", "files_struct.fdtab"),
    Key::Fact("fs.fd_offset", "fdtable.fd"),
    Key::Fact("qstr.size", "sizeof.qstr"),
    Key::Fact("qstr.name_offset", "qstr.name"),
    Key::Fact("path.d_name_offset", "dentry.d_name"),
    Key::Fact("path.d_iname_offset", "dentry.d_iname"),
    Key::Fact("path.d_parent_offset", "dentry.d_parent"),
    Key::Fact("path.d_op_offset", "dentry.d_op"),
    Key::Fact("path.d_dname_offset", "dentry_operations.d_dname"),
    Key::Fact("path.mnt_root_offset", "vfsmount.mnt_root"),
    Key::Diff("path.mnt_parent_offset", "mount.mnt_parent", "mount.mnt"),
    Key::Diff(
        "path.mnt_mountpoint_offset",
        "mount.mnt_mountpoint",
        "mount.mnt",
    ),
];

/// The kernelinfo.conf text, under `[group]`. Keys this kernel has no data for (e.g.
/// `mm.mmap_offset` on kernels with maple-tree VMAs) are written as comments saying so.
pub fn kernelinfo(profile: &Profile, group: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "[{group}]");
    let release = profile.text_fact("kernel.release").unwrap_or("");
    let version = profile.text_fact("kernel.version").unwrap_or("");
    let machine = profile.text_fact("kernel.machine").unwrap_or("x86_64");
    let _ = writeln!(out, "name = {release}|{version}|{machine}");
    let mut nums = release
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().ok());
    for part in ["a", "b", "c"] {
        match nums.next().flatten() {
            Some(n) => {
                let _ = writeln!(out, "version.{part} = {n}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "# version.{part}: kernel release not found in init_uts_ns"
                );
            }
        }
    }
    for key in KEYS {
        let (name, value) = match *key {
            Key::Fact(name, f) => (name, profile.fact(f)),
            Key::Sum(name, a, b) => (
                name,
                profile.fact(a).zip(profile.fact(b)).map(|(a, b)| a + b),
            ),
            Key::Diff(name, a, b) => (
                name,
                profile.fact(a).zip(profile.fact(b)).map(|(a, b)| a - b),
            ),
        };
        match value {
            // Addresses are printed unsigned, as PANDA reads them with g_key_file_get_uint64.
            Some(v) if name.ends_with("_addr") => {
                let _ = writeln!(out, "{name} = {}", v as u64);
            }
            Some(v) => {
                let _ = writeln!(out, "{name} = {v}");
            }
            None => {
                let _ = writeln!(out, "# {name}: not in this kernel's DWARF");
            }
        }
    }
    out
}
