//! Whether a compiled function returns anything: gcc's clones (`.isra`, `.constprop`, ...)
//! may drop the return value the source declares, and DWARF says nothing of it (the clone's
//! DIE only points at the original's). Read from the machine code instead.

use iced_x86::{Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, Register};

/// True if the function whose code is `code`, at address `entry`, provably returns nothing:
/// no instruction of it writes rax, and it neither calls nor jumps out of itself (a callee
/// could leave the value in rax). Then what rax holds at its `ret` is the caller's, not a
/// return value. Undecodable code gives `false`.
pub(crate) fn returns_nothing(code: &[u8], entry: u64) -> bool {
    let end = entry + code.len() as u64;
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    for insn in &mut decoder {
        if insn.is_invalid() {
            return false;
        }
        match insn.flow_control() {
            FlowControl::Call | FlowControl::IndirectCall | FlowControl::IndirectBranch => {
                return false
            }
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch => {
                let target = insn.near_branch_target();
                if !(entry..end).contains(&target) {
                    return false;
                }
            }
            _ => {}
        }
        let writes_rax = info.info(&insn).used_registers().iter().any(|r| {
            r.register().full_register() == Register::RAX
                && matches!(
                    r.access(),
                    OpAccess::Write
                        | OpAccess::CondWrite
                        | OpAccess::ReadWrite
                        | OpAccess::ReadCondWrite
                )
        });
        if writes_rax {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_that_never_writes_rax_returns_nothing() {
        // get_file.isra.0: lock addq $1, (%rdi); ret
        assert!(returns_nothing(
            &[0xf0, 0x48, 0x83, 0x07, 0x01, 0xc3],
            0x1000
        ));
        // mov %rdi, %rax; ret
        assert!(!returns_nothing(&[0x48, 0x89, 0xf8, 0xc3], 0x1000));
        // xor %eax, %eax; ret
        assert!(!returns_nothing(&[0x31, 0xc0, 0xc3], 0x1000));
        // call +0; ret: the callee may leave a value in rax.
        assert!(!returns_nothing(&[0xe8, 0, 0, 0, 0, 0xc3], 0x1000));
        // jmp far away (a tail call).
        assert!(!returns_nothing(&[0xe9, 0, 0x10, 0, 0], 0x1000));
    }
}
