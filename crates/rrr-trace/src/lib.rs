//! rrr-trace: the engine-independent core of rrr's tracer.
//!
//! An engine (the QEMU TCG plugin or the PANDA plugin) holds a [`Tracer`], which plans its
//! hooks and calls an [`Observer`] from them, handing it a [`Guest`] to read registers and
//! memory. The observer identifies the thread from the kernel stack, reads raw argument words
//! and strings, and ships [`Record`]s in batches over a bounded channel to one writer thread. The writer keeps per-thread shadow call stacks,
//! decodes arguments against the [`osi_profile::Profile`], and streams a Perfetto trace.

mod channel;
pub mod crash;
mod decode;
pub mod focus;
pub mod guest;
pub mod hooks;
pub mod locate;
pub mod observer;
pub mod options;
pub mod pipeline;
mod prefetch;
pub mod record;
pub mod ring;
mod stacks;
#[cfg(test)]
mod testing;
pub mod tracer;
pub mod watch;
pub mod window;
pub mod writer;

pub use crash::CrashReport;
pub use focus::Threads;
pub use guest::{Guest, Reg};
pub use hooks::{Hook, HookWord, Hooks, Returns};
pub use observer::{Observer, OsLayout};
pub use options::{BadOptions, TraceOptions};
pub use pipeline::{Backpressure, Pipeline, PipelineConfig, TraceSummary};
pub use record::{Args, ArgsRef, ArgsSlice, Record, ThreadIdent, TrackKey};
pub use tracer::{contained, Tracer, TracerError, SUMMARY_PREFIX};
pub use window::Window;
pub use writer::{NotedCall, TraceWriter, WriterError};
