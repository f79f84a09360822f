//! [`Guest`] over QEMU's plugin API: registers by handle, memory by virtual address, both of
//! the vCPU whose callback is running.

use std::collections::HashMap;
use std::ffi::CStr;

use qemu_plugin::sys::{
    qemu_plugin_get_registers, qemu_plugin_read_memory_vaddr, qemu_plugin_read_register,
    qemu_plugin_reg_descriptor, qemu_plugin_register, GArray, GByteArray,
};
use rrr_trace::{Guest, Reg};

// GLib, as linked into QEMU (the plugin API hands out and fills GLib arrays).
unsafe extern "C" {
    fn g_byte_array_new() -> *mut GByteArray;
    fn g_byte_array_set_size(array: *mut GByteArray, len: u32) -> *mut GByteArray;
    fn g_array_free(array: *mut GArray, free_segment: bool) -> *mut i8;
}

/// The registers and memory of the running vCPU.
pub struct QemuGuest {
    /// Register handles by DWARF number.
    regs: Vec<Option<usize>>,
    /// MSR_KERNEL_GS_BASE's handle.
    kernel_gs_base: Option<usize>,
    /// The buffer QEMU appends register values to. It is emptied only when it holds a page:
    /// emptying a GLib array goes through `g_array_remove_range`, and doing that at every
    /// read was 27 ns of each event in a looping trace's profile.
    regs_buf: *mut GByteArray,
    /// The buffer QEMU fills with memory (it sets its size to each read's).
    mem_buf: *mut GByteArray,
}

/// The bytes [`QemuGuest::regs_buf`] may hold before it is emptied.
const REGS_BUF_LEN: u32 = 4096;

// SAFETY: QEMU calls every callback of the plugin with the plugin's state locked; the scratch
// buffers are only touched inside those calls.
unsafe impl Send for QemuGuest {}

impl QemuGuest {
    /// Looks up the register handles. Must run in a vCPU context (the vCPU init callback).
    pub fn new() -> Result<Self, String> {
        let mut by_name = HashMap::new();
        // SAFETY: called in vCPU context as the API requires; the array holds descriptors whose
        // names are static strings owned by QEMU; we free only the array.
        unsafe {
            let array = qemu_plugin_get_registers();
            if array.is_null() {
                return Err("QEMU returned no register list".into());
            }
            let descs = std::slice::from_raw_parts(
                (*array).data as *const qemu_plugin_reg_descriptor,
                (*array).len as usize,
            );
            for d in descs {
                let name = CStr::from_ptr(d.name).to_string_lossy().into_owned();
                by_name.insert(name, d.handle as usize);
            }
            g_array_free(array, true);
        }
        let regs: Vec<Option<usize>> = (0..Reg::COUNT)
            .map(|n| by_name.get(Reg(n).name()).copied())
            .collect();
        if regs[Reg::RSP.0 as usize].is_none() {
            return Err(format!(
                "QEMU's register list has no rsp (is this an x86-64 guest?); it has: {:?}",
                by_name.keys().collect::<Vec<_>>()
            ));
        }
        Ok(QemuGuest {
            regs,
            kernel_gs_base: by_name.get(Reg::KERNEL_GS_BASE.name()).copied(),
            // SAFETY: plain GLib allocations, kept for the plugin's lifetime.
            regs_buf: unsafe { g_byte_array_new() },
            mem_buf: unsafe { g_byte_array_new() },
        })
    }

    fn handle(&self, reg: Reg) -> Option<usize> {
        match reg {
            Reg::KERNEL_GS_BASE => self.kernel_gs_base,
            Reg(n) => self.regs.get(n as usize).copied().flatten(),
        }
    }
}

impl Guest for QemuGuest {
    fn reg(&mut self, reg: Reg) -> u64 {
        let Some(handle) = self.handle(reg) else {
            return 0;
        };
        // SAFETY: `regs_buf` is a live GByteArray; QEMU appends the register's bytes to it.
        unsafe {
            let buf = self.regs_buf;
            if (*buf).len >= REGS_BUF_LEN {
                g_byte_array_set_size(buf, 0);
            }
            let at = (*buf).len as usize;
            let n = qemu_plugin_read_register(handle as *mut qemu_plugin_register, buf);
            if n <= 0 {
                return 0;
            }
            let all = std::slice::from_raw_parts((*buf).data, (*buf).len as usize);
            let bytes = &all[at.min(all.len())..];
            let mut word = [0u8; 8];
            let k = bytes.len().min(8);
            word[..k].copy_from_slice(&bytes[..k]);
            u64::from_le_bytes(word)
        }
    }

    fn read(&mut self, addr: u64, out: &mut [u8]) -> bool {
        if out.is_empty() {
            return true;
        }
        // SAFETY: `mem_buf` is a live GByteArray that QEMU resizes to `out.len()` on success.
        unsafe {
            let buf = self.mem_buf;
            if !qemu_plugin_read_memory_vaddr(addr, buf, out.len()) {
                return false;
            }
            let got = std::slice::from_raw_parts((*buf).data, (*buf).len as usize);
            if got.len() < out.len() {
                return false;
            }
            out.copy_from_slice(&got[..out.len()]);
        }
        true
    }
}
