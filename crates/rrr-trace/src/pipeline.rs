//! The bounded channel between the engine thread and the writer thread.
//!
//! The observer fills batches of records and hands them over whole; emptied batches come
//! back through a second channel, so the steady state allocates nothing. The writer flushes
//! its buffer whenever the queue has been idle for the flush interval.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError};
use osi_profile::Profile;

pub use crate::channel::Backpressure;
use crate::channel::BatchSender;
use crate::crash::CrashReport;
use crate::focus::Threads;
use crate::observer::{Observer, OsLayout};
use crate::record::Batch;
use crate::ring::Budget;
use crate::watch::{Range, Watcher};
use crate::window::Window;
pub use crate::writer::TraceSummary;
use crate::writer::{TraceWriter, WriterError};

/// A shared file, written through `&File`.
struct ArcFile(Arc<std::fs::File>);

impl Write for ArcFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

/// Tuning of the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Records per batch (1024 by default: a batch of 64-byte records stays in the caches
    /// between the vCPU thread that fills it and the writer that empties it; with 4096, and
    /// every batch ever sent kept for reuse, a traced fork loop's vCPU thread took 7.2 s
    /// instead of 6.7 s, 4 alternated runs each).
    pub batch_len: usize,
    /// Batches the queue holds.
    pub queue_batches: usize,
    /// Behaviour when the queue is full.
    pub backpressure: Backpressure,
    /// Flush the file after the queue has been idle this long.
    pub flush_interval: Duration,
    /// The crash report to mark where the kernel starts reporting it.
    pub crash: Option<CrashReport>,
    /// The part of the replay to write.
    pub window: Window,
    /// The threads to write.
    pub threads: Threads,
    /// The deepest kernel call to write, below the kernel's entry.
    pub max_depth: Option<u32>,
    /// The memory to watch, and where its events go.
    pub watch: Option<WatchTo>,
    /// The size budget (see [`TraceWriter::set_budget`]).
    pub budget: Option<Budget>,
    /// Note the calls of these functions (see [`TraceWriter::note_calls`]).
    pub note_calls: Vec<String>,
}

/// A watch's range, its object if known, and the watch file (see [`crate::watch`]).
#[derive(Clone, Debug)]
pub struct WatchTo {
    /// The memory watched.
    pub range: Range,
    /// The object holding it, if known.
    pub object: Option<Range>,
    /// The watch file, created.
    pub file: Arc<std::fs::File>,
    /// Mark the sanitizer's and the allocator's own accesses in the trace too.
    pub mark_own: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_len: 1024,
            queue_batches: 64,
            backpressure: Backpressure::Block,
            flush_interval: Duration::from_millis(200),
            crash: None,
            window: Window::ALL,
            threads: Threads::All,
            max_depth: None,
            watch: None,
            budget: None,
            note_calls: Vec::new(),
        }
    }
}

/// Emptied batches kept for reuse: enough for a writer that keeps up, few enough that the ones
/// reused are still in the caches (others are freed).
const RECYCLED_BATCHES: usize = 4;

/// A running trace: the observer for the engine, and the writer thread behind it.
pub struct Pipeline {
    observer: Option<Observer>,
    writer: Option<JoinHandle<Result<TraceSummary, WriterError>>>,
}

impl Pipeline {
    /// Starts a writer thread streaming to `out`.
    pub fn start<W: Write + Send + 'static>(
        out: W,
        profile: Arc<Profile>,
        layout: OsLayout,
        config: PipelineConfig,
    ) -> Self {
        let (tx, rx) = bounded::<Batch>(config.queue_batches.max(1));
        let (recycle_tx, recycled) = bounded::<Batch>(RECYCLED_BATCHES);
        let mut writer = TraceWriter::new(out, Arc::clone(&profile));
        if let Some(report) = config.crash {
            writer.mark_crash(report);
        }
        writer.set_window(config.window);
        writer.set_focus(config.threads, config.max_depth);
        if let Some(budget) = config.budget {
            writer.set_budget(budget);
        }
        if !config.note_calls.is_empty() {
            writer.note_calls(&config.note_calls);
        }
        if let Some(w) = config.watch {
            let out = std::io::BufWriter::new(ArcFile(w.file));
            writer.set_watch(Watcher::new(
                w.range,
                w.object,
                w.mark_own,
                &profile,
                Box::new(out),
            ));
        }
        let interval = config.flush_interval;
        let handle = std::thread::Builder::new()
            .name("rrr-writer".into())
            .spawn(move || {
                // The writer waits on the channel, so each batch may wake it: a writer that
                // polled every millisecond instead was no faster (vCPU thread 6.9 s against
                // 6.6 s tracing the fork loop, 4 alternated runs each).
                loop {
                    match rx.recv_timeout(interval) {
                        Ok(batch) => {
                            writer.write_batch(&batch)?;
                            let _ = recycle_tx.try_send(batch);
                        }
                        Err(RecvTimeoutError::Timeout) => writer.flush()?,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                writer.finish()
            })
            .expect("spawning the writer thread");
        let sender = BatchSender::new(tx, recycled, config.backpressure, config.batch_len.max(1));
        Pipeline {
            observer: Some(Observer::new(profile, layout, sender)),
            writer: Some(handle),
        }
    }

    /// Starts a pipeline writing the trace file at `path` (created or truncated).
    pub fn create(
        path: &Path,
        profile: Arc<Profile>,
        layout: OsLayout,
        config: PipelineConfig,
    ) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self::start(file, profile, layout, config))
    }

    /// The observer the engine's hooks call.
    pub fn observer(&mut self) -> &mut Observer {
        self.observer
            .as_mut()
            .expect("pipeline is running until finish")
    }

    /// Sends what is buffered, waits for the writer to close every open call and flush.
    pub fn finish(mut self) -> Result<TraceSummary, WriterError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<TraceSummary, WriterError> {
        if let Some(mut obs) = self.observer.take() {
            obs.flush();
            obs.close();
        }
        match self.writer.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(WriterError::Io(std::io::Error::other(
                    "the trace writer thread panicked",
                )))
            }),
            None => Ok(TraceSummary::default()),
        }
    }
}

impl Drop for Pipeline {
    /// A pipeline dropped without `finish` still ends its trace properly.
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("finishing the trace: {e}");
        }
    }
}
