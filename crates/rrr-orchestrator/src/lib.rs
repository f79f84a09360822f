//! rrr's orchestrator as a library: build a traceable kernel, a stimulus and its disk, record
//! the stimulus's run on an emulated machine, replay the recording under the tracer into a
//! Perfetto trace or under gdb. Each step takes plain values (a [`kernel::KernelSpec`], a
//! stimulus path, a [`recording::Recording`], a [`run::RunSpec`]) and caches what it builds;
//! the `rrr` command line is one front end over them.

pub mod cache;
pub mod compiler;
pub mod crash;
pub mod engine;
pub mod git;
pub mod idle;
pub mod kernel;
pub mod limits;
pub mod machine;
pub mod progress;
pub mod record;
pub mod recording;
pub mod reduce;
pub mod rootfs;
pub mod run;
pub mod serve;
pub mod stimulus;
pub mod syzbot;
pub mod syzkaller;
pub mod tools;
pub mod trace;
pub mod watch;
