//! rrr's orchestrator as a library: build a traceable kernel, a stimulus and its disk, record
//! the stimulus's run on an emulated machine, replay the recording under the tracer into a
//! Perfetto trace or under gdb. Each step takes plain values (a [`kernel::KernelSpec`], a
//! stimulus path, a [`Recording`], a [`RunSpec`]) and caches what it builds; the `rrr`
//! command line and the Python module are front ends over them.
//!
//! The front door: the modules below, one per step, and the names re-exported here. The
//! rest (the emulators, the machine, the tools, the reducer) is the crate's own.

pub mod cache;
pub mod kernel;
pub mod record;
pub mod report;
pub mod rootfs;
pub mod serve;
pub mod stimulus;
pub mod story;
pub mod syzbot;
pub mod trace;
pub mod watch;

mod compiler;
mod crash;
mod engine;
pub mod error;
mod git;
mod idle;
mod limits;
mod machine;

mod recording;
mod reduce;
mod run;
mod syzkaller;
mod tools;

pub use compiler::{CompilerPlan, LAUNCHER_ENV};
pub use engine::{install_panda_plugin, panda_replay_hint, Engine};
pub use error::{Error, ErrorKind, Result};
pub use limits::{parse_size, parse_threads, Limits, BROWSER_REACH};
pub use recording::Recording;
pub use run::{
    cached_recording, compare, run_chain, syzbot_inputs, RecordSpec, RunSpec, StimulusSource,
};
