//! x86-64 registers in DWARF numbering (the System V psABI's table), the one register table
//! of rrr: the profile's locations, the tracer's register reads and every engine's register
//! lookups use it.

/// rax (return value, low eightbyte).
pub const RAX: u16 = 0;
/// rdx (return value, high eightbyte).
pub const RDX: u16 = 1;
/// rsp.
pub const RSP: u16 = 7;
/// rip.
pub const RIP: u16 = 16;
/// The FS segment base.
pub const FS_BASE: u16 = 58;
/// The GS segment base (the kernel's per-CPU base while in kernel mode).
pub const GS_BASE: u16 = 59;
/// How many DWARF register numbers there are (0..=66).
pub const COUNT: u16 = 67;

/// The integer argument registers of the System V calling convention, in order: rdi, rsi,
/// rdx, rcx, r8, r9.
pub const INTEGER_ARGS: [u16; 6] = [5, 4, 1, 2, 8, 9];

/// Name of a DWARF register number, as QEMU's register list spells it.
pub fn name(reg: u16) -> &'static str {
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
        FS_BASE => "fs_base",
        GS_BASE => "gs_base",
        _ => "reg?",
    }
}

/// The general register's number in x86 instruction encoding (rax, rcx, rdx, rbx, rsp, rbp,
/// rsi, rdi, r8..r15): its index in an emulator's general-register array (QEMU's and PANDA's
/// `CPUX86State::regs`). `None` for the others.
pub fn gpr_index(reg: u16) -> Option<usize> {
    // DWARF numbers rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp, then r8..r15.
    const BY_DWARF: [usize; 16] = [0, 2, 1, 3, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];
    BY_DWARF.get(usize::from(reg)).copied()
}
