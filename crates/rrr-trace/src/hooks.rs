//! Which guest instructions an engine hooks: the entry of every traced function, and every
//! `ret` in kernel text or in the stimulus's text. Decided once per instruction, when the
//! engine translates (or first sees) it.

use std::ops::Range;

use crate::guest::is_kernel_address;
use osi_profile::{ClassRef, Profile};

/// What to call when an instruction is about to execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// The entry of the function with this id.
    Enter(u32),
    /// A return, of a function that leaves its value there.
    Return(Returns),
}

/// Where a function leaves its return value at its `ret` (System V x86-64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Returns {
    /// In rax (or nothing).
    #[default]
    Rax,
    /// A struct of 9 to 16 bytes: its two eightbytes in rax and rdx.
    RaxRdx,
    /// A struct of more than 16 bytes, in memory: rax holds its address.
    Memory,
}

impl Returns {
    /// Where the function containing `pc` leaves its return value.
    pub fn at(profile: &Profile, pc: u64) -> Returns {
        let class = profile
            .function_containing(pc)
            .and_then(|id| profile.function(id))
            .map(|f| f.ret_class());
        match class {
            Some(ClassRef::StructByValue(size)) if size > 16 => Returns::Memory,
            Some(ClassRef::StructByValue(size)) if size > 8 => Returns::RaxRdx,
            _ => Returns::Rax,
        }
    }
}

/// A hook, its instruction's address and how many instructions of its block run from it on
/// (`back`), packed in one word: what an engine's callback carries as its own data (QEMU's
/// userdata), so that a hooked instruction needs no allocation and its callback no memory
/// load. A boxed closure per hook cost a cache miss per event (3.4% of a traced replay in
/// perf). Kernel addresses keep their low 32 bits (the high ones are all set), user addresses
/// must be below 4 GiB (a static stimulus's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookWord(pub u64);

impl HookWord {
    const KERNEL: u64 = 1 << 32;
    const BACK_SHIFT: u32 = 33;
    const BACK_BITS: u32 = 10;
    const KIND_SHIFT: u32 = 43;
    const FUNC_SHIFT: u32 = 45;

    /// Packs `hook` at `pc`, `back` instructions before its block's end, if it fits.
    pub fn pack(hook: Hook, pc: u64, back: u64) -> Option<HookWord> {
        let half = match pc >> 32 {
            0 => 0,
            0xffff_ffff => Self::KERNEL,
            _ => return None,
        };
        if back >= 1 << Self::BACK_BITS {
            return None;
        }
        let (kind, func) = match hook {
            Hook::Enter(func) if u64::from(func) < 1 << (64 - Self::FUNC_SHIFT) => {
                (0, u64::from(func))
            }
            Hook::Enter(_) => return None,
            Hook::Return(Returns::Rax) => (1, 0),
            Hook::Return(Returns::RaxRdx) => (2, 0),
            Hook::Return(Returns::Memory) => (3, 0),
        };
        Some(HookWord(
            (pc & 0xffff_ffff)
                | half
                | back << Self::BACK_SHIFT
                | kind << Self::KIND_SHIFT
                | func << Self::FUNC_SHIFT,
        ))
    }

    /// The hook, its instruction's address and its `back`.
    #[inline(always)]
    pub fn unpack(self) -> (Hook, u64, u64) {
        let w = self.0;
        let pc = if w & Self::KERNEL != 0 {
            0xffff_ffff_0000_0000 | (w & 0xffff_ffff)
        } else {
            w & 0xffff_ffff
        };
        let back = (w >> Self::BACK_SHIFT) & ((1 << Self::BACK_BITS) - 1);
        let hook = match (w >> Self::KIND_SHIFT) & 3 {
            0 => Hook::Enter((w >> Self::FUNC_SHIFT) as u32),
            1 => Hook::Return(Returns::Rax),
            2 => Hook::Return(Returns::RaxRdx),
            _ => Hook::Return(Returns::Memory),
        };
        (hook, pc, back)
    }
}

/// The hook plan for one profile.
#[derive(Clone, Debug)]
pub struct Hooks {
    /// The stimulus's code (user functions of the profile); other user code is not traced.
    user_text: Range<u64>,
}

impl Hooks {
    /// Plans hooks for `profile`.
    pub fn new(profile: &Profile) -> Self {
        let user = profile.functions().filter(|f| f.is_user());
        let (start, end) = user.fold((u64::MAX, 0), |(start, end), f| {
            let f_end = f.entry() + u64::from(f.size()).max(1);
            (start.min(f.entry()), end.max(f_end))
        });
        Hooks {
            user_text: start..end,
        }
    }

    /// True if code at `pc` is traced at all (kernel text, or the stimulus).
    pub fn covers(&self, pc: u64) -> bool {
        is_kernel_address(pc) || self.user_text.contains(&pc)
    }

    /// The hooks of the instruction at `pc`, whose first bytes are `code` (a `ret` is
    /// recognized from its first [`MAX_RET_LEN`] bytes; bytes past the instruction are
    /// ignored). `pc` must be [covered](Self::covers).
    pub fn at(&self, profile: &Profile, pc: u64, code: &[u8]) -> (Option<Hook>, Option<Hook>) {
        let enter = profile
            .function_at_entry(pc)
            .filter(|&id| profile.function(id).is_some_and(|f| !f.is_denied()))
            .map(Hook::Enter);
        let ret = is_ret(code).then(|| Hook::Return(Returns::at(profile, pc)));
        (enter, ret)
    }
}

/// Bytes that identify a near `ret` (the longest encoding, `c2 iw`).
pub const MAX_RET_LEN: usize = 3;

/// True if an instruction starting with `code` is a near `ret`: `c3`, `c2 iw`, or
/// `rep`/`bnd`-prefixed `c3`.
pub fn is_ret(code: &[u8]) -> bool {
    matches!(
        code,
        [0xc3, ..] | [0xc2, _, _, ..] | [0xf3 | 0xf2, 0xc3, ..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_word_gives_back_what_was_packed_or_refuses_what_does_not_fit() {
        let cases = [
            (Hook::Enter(0), 0xffff_ffff_8100_0000, 0),
            (Hook::Enter((1 << 19) - 1), 0xffff_ffff_ffff_fff0, 1023),
            (Hook::Return(Returns::Rax), 0x40_1234, 7),
            (Hook::Return(Returns::RaxRdx), 0xffff_ffff_8123_4567, 512),
            (Hook::Return(Returns::Memory), 0xffff_ffff, 1),
        ];
        for (hook, pc, back) in cases {
            let word = HookWord::pack(hook, pc, back).expect("fits");
            assert_eq!(word.unpack(), (hook, pc, back));
        }
        assert_eq!(
            HookWord::pack(Hook::Enter(1 << 19), 0xffff_ffff_8100_0000, 0),
            None
        );
        assert_eq!(
            HookWord::pack(Hook::Return(Returns::Rax), 0x5555_5555_0000, 0),
            None
        );
        assert_eq!(
            HookWord::pack(Hook::Return(Returns::Rax), 0x40_0000, 1024),
            None
        );
    }
    use osi_profile::{flags, Class, Function, ProfileData, TypeDesc};

    fn profile() -> Profile {
        let f = |name: &str, entry, flags| Function {
            flags,
            ..crate::testing::function(name, entry)
        };
        let returning = |name: &str, entry, size| Function {
            ret: TypeDesc {
                c_type: format!("struct s{size}"),
                class: Class::StructByValue(size),
            },
            ..f(name, entry, 0)
        };
        let mut d = ProfileData {
            functions: vec![
                f("main", 0x1000_1000, flags::USER),
                f("helper", 0x1000_2000, flags::USER),
                f("do_sys_openat2", 0xffff_ffff_8120_0000, 0),
                f("kasan_check_range", 0xffff_ffff_8130_0000, flags::DENIED),
                returning("current_time", 0xffff_ffff_8140_0000, 16),
                returning("build_open_how", 0xffff_ffff_8150_0000, 24),
                returning("fdget_small", 0xffff_ffff_8160_0000, 8),
            ],
            ..Default::default()
        };
        d.finish();
        Profile::from_bytes(&d.to_bytes()).unwrap()
    }

    fn at(h: &Hooks, p: &Profile, pc: u64, insn: &[u8]) -> (Option<Hook>, Option<Hook>) {
        h.at(p, pc, insn)
    }

    #[test]
    fn ret_encodings() {
        assert!(is_ret(&[0xc3]));
        assert!(is_ret(&[0xc2, 8, 0]));
        assert!(is_ret(&[0xf3, 0xc3]));
        assert!(
            is_ret(&[0xc3, 0xcc, 0xcc]),
            "bytes past the instruction are ignored"
        );
        assert!(!is_ret(&[0xc2, 8]), "truncated ret imm16");
        assert!(!is_ret(&[0xf3, 0x48, 0xa5]), "rep movsq");
        assert!(!is_ret(&[]));
        assert!(!is_ret(&[0xcb]), "far ret is not a function return");
        assert!(!is_ret(&[0x48, 0xcf]), "iretq");
        assert!(!is_ret(&[0x0f, 0x07]), "sysret");
    }

    #[test]
    fn kernel_and_stimulus_code_is_covered_other_user_code_is_not() {
        let p = profile();
        let h = Hooks::new(&p);
        assert!(h.covers(0xffff_ffff_8100_0000));
        assert!(h.covers(0x1000_1000) && h.covers(0x1000_203f));
        assert!(!h.covers(0x1000_2040), "past the stimulus's last function");
        assert!(!h.covers(0x40_1000), "busybox");
    }

    #[test]
    fn entries_of_traced_functions_and_returns_are_hooked() {
        let p = profile();
        let h = Hooks::new(&p);
        let id = |n| p.function_by_name(n).unwrap();
        let push_rbp = [0x55];
        assert_eq!(
            at(&h, &p, 0xffff_ffff_8120_0000, &push_rbp),
            (Some(Hook::Enter(id("do_sys_openat2"))), None)
        );
        assert_eq!(at(&h, &p, 0xffff_ffff_8130_0000, &push_rbp), (None, None));
        assert_eq!(
            at(&h, &p, 0x1000_1000, &[0xc3]),
            (
                Some(Hook::Enter(id("main"))),
                Some(Hook::Return(Returns::Rax))
            )
        );
        assert_eq!(
            at(&h, &p, 0xffff_ffff_8120_0010, &[0xc3]),
            (None, Some(Hook::Return(Returns::Rax)))
        );
        assert_eq!(
            at(&h, &p, 0xffff_ffff_8120_0010, &[0x48, 0x89, 0xe5, 0x90]),
            (None, None)
        );
    }

    #[test]
    fn a_ret_knows_where_its_function_leaves_a_struct() {
        let p = profile();
        let h = Hooks::new(&p);
        for (pc, returns) in [
            (0xffff_ffff_8140_0020, Returns::RaxRdx),
            (0xffff_ffff_8150_0020, Returns::Memory),
            (0xffff_ffff_8160_0020, Returns::Rax),
            (0xffff_ffff_8170_0020, Returns::Rax),
        ] {
            assert_eq!(
                at(&h, &p, pc, &[0xc3]).1,
                Some(Hook::Return(returns)),
                "{pc:x}"
            );
        }
    }
}
