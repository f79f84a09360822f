//! [`Guest`] over PANDA: registers straight from the vCPU's `CPUX86State`, memory by virtual
//! address through PANDA's debug access (the guest's page tables, no side effects).

use panda::prelude::*;
use panda::sys::CPUX86State;
use rrr_trace::{Guest, Reg};

/// QEMU's segment indexes (`R_FS`, `R_GS`).
const R_FS: usize = 4;
const R_GS: usize = 5;

/// The vCPU a PANDA callback runs on.
pub struct PandaGuest<'a> {
    cpu: &'a mut CPUState,
}

impl<'a> PandaGuest<'a> {
    /// Wraps the callback's vCPU.
    pub fn new(cpu: &'a mut CPUState) -> Self {
        PandaGuest { cpu }
    }

    fn env(&self) -> &CPUX86State {
        // SAFETY: on an x86_64 PANDA, `env_ptr` points at the vCPU's CPUX86State, alive and
        // not written by anything else while a callback of this vCPU runs.
        unsafe { &*(self.cpu.env_ptr as *const CPUX86State) }
    }
}

impl Guest for PandaGuest<'_> {
    fn reg(&mut self, reg: Reg) -> u64 {
        let env = self.env();
        if let Some(i) = reg.x86_gpr_index() {
            return env.regs[i];
        }
        match reg {
            Reg::GS_BASE => env.segs[R_GS].base,
            Reg::KERNEL_GS_BASE => env.kernelgsbase,
            Reg::FS_BASE => env.segs[R_FS].base,
            Reg::RIP => env.eip,
            _ => 0,
        }
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        buf.is_empty() || panda::mem::virtual_memory_read_into(self.cpu, addr, buf).is_ok()
    }
}
