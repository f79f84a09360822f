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
use crate::observer::{Observer, OsLayout};
use crate::options::TraceOptions;
use crate::record::Batch;
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
    /// What to write: the window, threads, depth, budget, watch and noted calls, each read by
    /// the writer's stage that uses it ([`TraceWriter::with_options`]).
    pub options: TraceOptions,
    /// The crash report to mark where the kernel starts reporting it (read from the file
    /// `options.crash` names).
    pub crash: Option<CrashReport>,
    /// Where the watch's events go (the file `options.accesses` names, created).
    pub accesses: Option<Arc<std::fs::File>>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_len: 1024,
            queue_batches: 64,
            backpressure: Backpressure::Block,
            flush_interval: Duration::from_millis(200),
            options: TraceOptions::default(),
            crash: None,
            accesses: None,
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
        let accesses = config
            .accesses
            .map(|file| Box::new(std::io::BufWriter::new(ArcFile(file))) as Box<dyn Write + Send>);
        let mut writer = TraceWriter::with_options(
            out,
            Arc::clone(&profile),
            &config.options,
            config.crash,
            accesses,
        );
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
