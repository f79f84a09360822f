//! What an engine's plugin holds between hooks: the profile, the hook plan, the pipeline and
//! the trace clock. Each engine's plugin is a thin adapter over a [`Tracer`]: at translation it
//! asks which instructions to hook, at execution it hands over the vCPU and the guest clock.
//!
//! Two shapes of engine are served. QEMU's TCG plugin API attaches a closure to each hooked
//! instruction, so it asks [`Tracer::hooks_at`] and calls [`Tracer::on_hook`]. PANDA's
//! `insn_exec` callback only gives the pc, so the decision taken at translation is kept here,
//! by pc ([`Tracer::plan`]), and looked up at execution ([`Tracer::on_exec`]).

use std::collections::HashMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use osi_profile::{Profile, ProfileError};

use crate::crash::CrashReport;
use crate::guest::{is_kernel_address, Guest};
use crate::hooks::{Hook, Hooks, MAX_RET_LEN};
use crate::locate::Locator;
use crate::observer::OsLayout;
use crate::options::TraceOptions;
use crate::pipeline::{Pipeline, PipelineConfig, TraceSummary};
use crate::record::Access;
use crate::watch::Range;
use crate::writer::WriterError;

/// Why a tracer could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    /// The profile could not be opened.
    #[error("{0}; make it with `rrr profile` (or let `rrr trace` make it)")]
    Profile(#[from] ProfileError),
    /// The trace file could not be created.
    #[error("cannot create the trace {path}: {source}")]
    Create {
        /// The trace file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The crash report file could not be read.
    #[error("cannot read the crash report {path}: {source}")]
    Crash {
        /// The report file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The trace's results could not be written.
    #[error("cannot write the trace's results {path}: {source}")]
    Results {
        /// The results file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The writer failed (the trace written so far is complete up to its last packet).
    #[error("finishing the trace: {0}")]
    Finish(#[from] WriterError),
}

/// The hooks planned for one instruction (see [`Tracer::plan`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Planned {
    enter: Option<Hook>,
    ret: Option<Hook>,
}

/// A running tracer: one per replay.
pub struct Tracer {
    profile: Arc<Profile>,
    hooks: Hooks,
    pipeline: Option<Pipeline>,
    /// Last timestamp handed out (the trace's clock never goes back).
    last_ts: u64,
    /// Hooks decided at translation, by pc, for engines that only learn the pc at execution.
    planned: HashMap<u64, Planned>,
    /// When locating instead of tracing: the locator, and the file it writes its answer to.
    locator: Option<(Locator, PathBuf)>,
    /// Where to write, at the end, the trace's results (see [`TraceOptions::results`]).
    results: Option<PathBuf>,
    /// The memory watched.
    watched: Option<Range>,
}

impl Tracer {
    /// Opens the profile at `profile` and starts writing the trace file `trace` as `options`
    /// say.
    pub fn open(
        profile: &Path,
        trace: &Path,
        options: &TraceOptions,
    ) -> Result<Tracer, TracerError> {
        let profile = Arc::new(Profile::open(profile)?);
        let crash = options
            .crash
            .as_deref()
            .map(|path| {
                CrashReport::read(path).map_err(|source| TracerError::Crash {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        let file = std::fs::File::create(trace).map_err(|source| TracerError::Create {
            path: trace.to_owned(),
            source,
        })?;
        let accesses = match (options.watch, &options.accesses) {
            (Some(_), Some(path)) => {
                let file = std::fs::File::create(path).map_err(|source| TracerError::Create {
                    path: path.to_owned(),
                    source,
                })?;
                Some(Arc::new(file))
            }
            _ => None,
        };
        let config = PipelineConfig {
            options: options.clone(),
            crash,
            accesses,
            ..PipelineConfig::default()
        };
        let mut tracer = Tracer::start(profile, file, config);
        tracer.results = options.results.clone();
        tracer.watched = options.watch;
        Ok(tracer)
    }

    /// Opens the profile at `profile` and [locates](Self::locating) trace time `at`.
    pub fn open_locating(profile: &Path, at: u64, out: &Path) -> Result<Tracer, TracerError> {
        Ok(Tracer::locating(Arc::new(Profile::open(profile)?), at, out))
    }

    /// A tracer that finds the hooked execution at trace time `at` instead of tracing (see
    /// [`crate::locate`]). When the replay reaches it, its
    /// [`Located`](crate::locate::Located) line is written to `out` (atomically, so a reader
    /// polling for the file never sees half of it).
    pub fn locating(profile: Arc<Profile>, at: u64, out: &Path) -> Tracer {
        Tracer::with(profile, None, Some((Locator::new(at), out.to_owned())))
    }

    /// Starts a tracer writing to `out`.
    pub fn start<W: Write + Send + 'static>(
        profile: Arc<Profile>,
        out: W,
        config: PipelineConfig,
    ) -> Tracer {
        let layout = OsLayout::from_profile(&profile);
        let pipeline = Pipeline::start(out, profile.clone(), layout, config);
        Tracer::with(profile, Some(pipeline), None)
    }

    /// A tracer that feeds `pipeline` or runs `locator` (one of them), from the replay's start.
    fn with(
        profile: Arc<Profile>,
        pipeline: Option<Pipeline>,
        locator: Option<(Locator, PathBuf)>,
    ) -> Tracer {
        Tracer {
            hooks: Hooks::new(&profile),
            pipeline,
            profile,
            last_ts: 0,
            planned: HashMap::new(),
            locator,
            results: None,
            watched: None,
        }
    }

    /// The memory watched (`watch=`): the engine reports the accesses that touch it with
    /// [`Tracer::on_access`].
    pub fn watched(&self) -> Option<Range> {
        self.watched
    }

    /// An instruction loads or stores memory that touches the [watched](Self::watched)
    /// range, `now` guest instructions into the replay.
    pub fn on_access<G: Guest + ?Sized>(&mut self, g: &mut G, access: Access, now: u64) {
        self.last_ts = self.last_ts.max(now);
        if let Some(p) = self.pipeline.as_mut() {
            p.observer().on_access(g, access, self.last_ts);
        }
    }

    /// True if code at `pc` is traced at all (translation can skip everything else).
    pub fn covers(&self, pc: u64) -> bool {
        self.hooks.covers(pc)
    }

    /// The hooks of the instruction at `pc`, whose first bytes (up to [`MAX_RET_LEN`]; more
    /// are ignored) are `code`. `pc` must be [covered](Self::covers).
    pub fn hooks_at(&self, pc: u64, code: &[u8]) -> [Option<Hook>; 2] {
        let (enter, ret) = self.hooks.at(&self.profile, pc, code);
        [enter, ret]
    }

    /// A hooked instruction at `pc` is about to execute on `cpu`, `now` guest instructions
    /// into the replay.
    pub fn on_hook<G: Guest + ?Sized>(
        &mut self,
        cpu: u32,
        g: &mut G,
        hook: Hook,
        pc: u64,
        now: u64,
    ) {
        self.last_ts = self.last_ts.max(now);
        if let Some((locator, out)) = self.locator.as_mut() {
            if let Some(found) = locator.observe(hook, pc, self.last_ts) {
                let staged = out.with_extension("part");
                let written = std::fs::write(&staged, format!("{found}\n"))
                    .and_then(|()| std::fs::rename(&staged, &*out));
                if let Err(e) = written {
                    eprintln!("rrr: error: cannot write {}: {e}", out.display());
                }
            }
            return;
        }
        let Some(pipeline) = self.pipeline.as_mut() else {
            return;
        };
        let obs = pipeline.observer();
        match hook {
            Hook::Enter(func) => obs.on_enter(cpu, g, func, self.last_ts),
            Hook::Return(returns) => obs.on_return(cpu, g, pc, returns, self.last_ts),
        }
    }

    /// Decides, while the engine translates the instruction at `pc`, whether it needs an
    /// execution callback; the decision is kept for [`on_exec`](Self::on_exec).
    pub fn plan<G: Guest + ?Sized>(&mut self, g: &mut G, pc: u64) -> bool {
        if !self.covers(pc) {
            return false;
        }
        let p = self.decide(g, pc);
        if p == Planned::default() {
            self.planned.remove(&pc);
            false
        } else {
            self.planned.insert(pc, p);
            true
        }
    }

    /// The instruction at `pc`, [planned](Self::plan) for a callback, is about to execute.
    pub fn on_exec<G: Guest + ?Sized>(&mut self, cpu: u32, g: &mut G, pc: u64, now: u64) {
        let p = if is_kernel_address(pc) {
            self.planned.get(&pc).copied().unwrap_or_default()
        } else {
            // A user address holds different code in different processes, and the plan is
            // the last translation's: look again at what this one runs.
            self.decide(g, pc)
        };
        for hook in [p.enter, p.ret].into_iter().flatten() {
            self.on_hook(cpu, g, hook, pc, now);
        }
    }

    fn decide<G: Guest + ?Sized>(&self, g: &mut G, pc: u64) -> Planned {
        let mut code = [0u8; MAX_RET_LEN];
        // The longest read that succeeds: an instruction may end just before an unmapped page.
        let n = (1..=MAX_RET_LEN)
            .rev()
            .find(|&n| g.read(pc, &mut code[..n]))
            .unwrap_or(0);
        let (enter, ret) = self.hooks.at(&self.profile, pc, &code[..n]);
        Planned { enter, ret }
    }

    /// Ends the trace: every open call is closed at the last timestamp and the file flushed;
    /// the summary goes to the results file if one was asked for. Later calls (and hooks) do
    /// nothing.
    pub fn finish(&mut self) -> Option<Result<TraceSummary, TracerError>> {
        let pipeline = self.pipeline.take()?;
        let summary = pipeline.finish().map_err(TracerError::from);
        if let (Ok(s), Some(path)) = (&summary, &self.results) {
            if let Err(source) = s.save(path) {
                return Some(Err(TracerError::Results {
                    path: path.clone(),
                    source,
                }));
            }
        }
        Some(summary)
    }
}

impl Tracer {
    /// Runs an engine's execution callback on the tracer. A panic must not unwind into the
    /// emulator (that aborts it and loses the trace): it is caught, the trace is ended where
    /// it is (so it still opens), and later hooks do nothing.
    pub fn guarded(&mut self, f: impl FnOnce(&mut Tracer)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_ok() {
            return;
        }
        let ended = match self.finish() {
            Some(Ok(s)) => format!("the trace ends there ({s})"),
            Some(Err(e)) => e.to_string(),
            None => "the trace had ended".to_owned(),
        };
        eprintln!("rrr: error: the tracer failed (the panic above); {ended}");
    }
}

/// Runs an engine callback's body, turning a panic into `None` (a panic must not unwind into
/// the emulator, which would abort it and lose the trace). The panic message has been printed
/// by the panic hook by then.
pub fn contained<R>(f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// What both engines' plugins print on stderr before the [`TraceSummary`] that ends a trace
/// (`rrr_trace: 12 events, 345 bytes, 0 dropped`), and before their errors.
pub const SUMMARY_PREFIX: &str = "rrr_trace: ";

impl std::fmt::Display for TraceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events, {} bytes, {} dropped",
            self.events, self.bytes, self.dropped
        )?;
        if let Some(ts) = self.crash_at {
            write!(f, ", crash at {ts}")?;
        }
        if let Some(cut) = &self.cut {
            write!(
                f,
                ", kept from {} of {} bytes and {} events",
                cut.from, cut.whole_bytes, cut.whole_events
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Cut, Gap};

    #[test]
    fn summaries_print_for_people_and_round_trip_through_their_results_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("results.json");
        let mut s = TraceSummary {
            events: 12,
            bytes: 345,
            dropped: 6,
            tracks: 2,
            crash_at: None,
            sizes: vec![(10, 100, 3), (20, 345, 12)],
            cut: None,
            calls: vec![crate::NotedCall {
                function: "refcount_warn_saturate".into(),
                ts: 9,
                tid: 40,
                args: vec![0xffff_c900_0001_3e5c, 3],
            }],
        };
        assert_eq!(s.to_string(), "12 events, 345 bytes, 6 dropped");
        s.save(&file).unwrap();
        assert_eq!(TraceSummary::load(&file).unwrap(), s);
        s.crash_at = Some(1_219_424_902);
        s.cut = Some(Cut {
            from: 5,
            whole_bytes: 6,
            whole_events: 7,
            gaps: vec![Gap { from: 10, to: 20 }],
        });
        assert_eq!(
            s.to_string(),
            "12 events, 345 bytes, 6 dropped, crash at 1219424902, kept from 5 of 6 bytes and 7 events"
        );
        s.save(&file).unwrap();
        assert_eq!(TraceSummary::load(&file).unwrap(), s);
        std::fs::write(&file, "12 events").unwrap();
        assert!(TraceSummary::load(&file).is_err());
    }
}
