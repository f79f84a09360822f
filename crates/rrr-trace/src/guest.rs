//! What the core needs from an engine: registers and guest virtual memory of the vCPU that is
//! running the hook.

use osi_profile::arch;

/// An x86-64 register in DWARF numbering (the numbering the profile's locations use; the
/// table is [`osi_profile::arch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg(pub u16);

impl Reg {
    /// rax (return value).
    pub const RAX: Reg = Reg(arch::RAX);
    /// rdx (high half of a 128-bit return value).
    pub const RDX: Reg = Reg(arch::RDX);
    /// rsp.
    pub const RSP: Reg = Reg(arch::RSP);
    /// rip.
    pub const RIP: Reg = Reg(arch::RIP);
    /// The FS segment base.
    pub const FS_BASE: Reg = Reg(arch::FS_BASE);
    /// The GS segment base (kernel per-CPU base while in kernel mode).
    pub const GS_BASE: Reg = Reg(arch::GS_BASE);
    /// How many DWARF register numbers there are (`Reg(0)..Reg(COUNT)`).
    pub const COUNT: u16 = arch::COUNT;
    /// MSR_KERNEL_GS_BASE (kernel per-CPU base while in user mode). Not a DWARF register:
    /// numbered outside DWARF's range.
    pub const KERNEL_GS_BASE: Reg = Reg(1000);

    /// The register's number in x86 instruction encoding (rax, rcx, rdx, rbx, rsp, rbp, rsi,
    /// rdi, r8..r15): its index in an emulator's general-register array (QEMU's and PANDA's
    /// `CPUX86State::regs`). `None` for the others.
    pub fn x86_gpr_index(self) -> Option<usize> {
        arch::gpr_index(self.0)
    }

    /// Name of the register, as the profile's TSV and QEMU's register list spell it.
    pub fn name(self) -> &'static str {
        match self {
            Reg::KERNEL_GS_BASE => "k_gs_base",
            Reg(n) => arch::name(n),
        }
    }
}

/// A vCPU as seen from inside a hook.
pub trait Guest {
    /// Reads a register (DWARF x86-64 numbering). Unknown registers read as 0.
    fn reg(&mut self, reg: Reg) -> u64;
    /// Reads guest virtual memory; false if any byte is unmapped.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool;

    /// Reads a little-endian u64; `None` if unmapped.
    fn read_u64(&mut self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
}

/// Where the user stack pointer is in the kernel's `struct pt_regs` on x86-64 (`r15` ...
/// `orig_ax`, `ip`, `cs`, `flags`, then `sp`: its 20th word): the entry code saves it there,
/// and the layout is the kernel's ABI with its entry assembly.
pub const PT_REGS_SP: u64 = 19 * 8;

/// True for addresses in the kernel half of the x86-64 address space.
pub fn is_kernel_address(addr: u64) -> bool {
    addr >> 63 == 1
}

#[cfg(test)]
mod tests {
    use super::Reg;

    #[test]
    fn names_match_qemus_x86_64_register_names() {
        let names = [Reg(5), Reg::RSP, Reg(8), Reg::GS_BASE, Reg::KERNEL_GS_BASE].map(Reg::name);
        assert_eq!(names, ["rdi", "rsp", "r8", "gs_base", "k_gs_base"]);
    }

    #[test]
    fn general_registers_map_to_their_encoding_numbers() {
        let by_encoding = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        for n in 0..16 {
            let i = Reg(n).x86_gpr_index().unwrap();
            assert_eq!(by_encoding[i], Reg(n).name(), "DWARF {n}");
        }
        assert_eq!(Reg(16).x86_gpr_index(), None, "rip");
        assert_eq!(Reg::GS_BASE.x86_gpr_index(), None);
    }
}
