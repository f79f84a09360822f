//! The command line's spellings of the library's choices: clap stays out of the library.

use rrr_orchestrator::kernel::CcChoice;
use rrr_orchestrator::Engine;

/// Which emulator records and replays.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineArg {
    /// Stock QEMU 10.x: icount record/replay, the TCG plugin librrr_qemu.so.
    #[default]
    Qemu,
    /// PANDA (panda-system-x86_64): its own record/replay, the PANDA plugin rrr_trace.
    Panda,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Qemu => Engine::Qemu,
            EngineArg::Panda => Engine::Panda,
        }
    }
}

/// A compiler to build the kernel with.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcArg {
    /// GNU gcc.
    Gcc,
    /// LLVM clang (`make LLVM=1`).
    Clang,
}

impl From<CcArg> for CcChoice {
    fn from(c: CcArg) -> CcChoice {
        match c {
            CcArg::Gcc => CcChoice::Gcc,
            CcArg::Clang => CcChoice::Clang,
        }
    }
}
