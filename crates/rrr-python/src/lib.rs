//! `rrr._rrr`: the orchestrator's steps for the `rrr` Python package (python/rrr), which gives
//! them syz-rrr's shapes (`rrr.Kernel`, `rrr.record`, ...). Each step takes and returns plain
//! values (paths, numbers, strings), runs without the GIL, and raises `rrr.Error` with the
//! message the command line prints.

#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use rrr_orchestrator::kernel::{self, Kernel, KernelSpec, DISTRO_SOURCE};
use rrr_orchestrator::record::Attempts;
use rrr_orchestrator::report::{set_reporter, Level, Progress, Reporter};
use rrr_orchestrator::serve::TraceServer;
use rrr_orchestrator::trace::GdbReplay;
use rrr_orchestrator::CompilerPlan;
use rrr_orchestrator::Engine;
use rrr_orchestrator::ErrorKind;
use rrr_orchestrator::Recording;
use rrr_orchestrator::{cached_recording, syzbot_inputs, RecordSpec};
use rrr_orchestrator::{parse_size, parse_threads, Limits};
use rrr_orchestrator::{rootfs, stimulus, syzbot, trace};
use rrr_trace::Window;

create_exception!(
    _rrr,
    Error,
    PyException,
    "An rrr step failed; the message says why and what to do, as the command line does."
);
create_exception!(
    _rrr,
    NetworkError,
    Error,
    "Reaching the network failed (syzbot, a git remote); trying again may work."
);
create_exception!(
    _rrr,
    BuildError,
    Error,
    "A build failed: the kernel, the stimulus, syz-prog2c."
);
create_exception!(
    _rrr,
    PatchError,
    Error,
    "A patch does not apply to the kernel source."
);
create_exception!(
    _rrr,
    RecordingError,
    Error,
    "Recording failed: the machine did not boot, stopped early, or no attempt crashed."
);
create_exception!(
    _rrr,
    ReplayDivergedError,
    Error,
    "The replay did not follow the recording (diverged, failed, stopped short, timed out)."
);
create_exception!(
    _rrr,
    BadInputError,
    Error,
    "The input is wrong: a bad bug id, a path that is not what it should be, a bad value."
);
create_exception!(
    _rrr,
    MissingToolError,
    Error,
    "A tool or file rrr needs is not installed."
);

/// `e` as the `rrr.Error` subclass of its kind, with its causes, as the command line prints it.
fn error(e: impl Into<rrr_orchestrator::Error>) -> PyErr {
    let e: rrr_orchestrator::Error = e.into();
    let message = e.to_string();
    match e.kind() {
        ErrorKind::Network => NetworkError::new_err(message),
        ErrorKind::Build => BuildError::new_err(message),
        ErrorKind::Patch => PatchError::new_err(message),
        ErrorKind::Recording => RecordingError::new_err(message),
        ErrorKind::ReplayDiverged => ReplayDivergedError::new_err(message),
        ErrorKind::BadInput => BadInputError::new_err(message),
        ErrorKind::MissingTool => MissingToolError::new_err(message),
        _ => Error::new_err(message),
    }
}

/// The library's messages go to Python's `logging` (logger `rrr`), its long steps too, as
/// they start.
struct Logging;

impl Logging {
    fn log(level: &str, text: &str) {
        Python::attach(|py| {
            let logged = py
                .import("logging")
                .and_then(|l| l.call_method1("getLogger", ("rrr",)))
                .and_then(|logger| logger.call_method1(level, (text,)));
            if let Err(e) = logged {
                e.print(py);
            }
        });
    }
}

impl Reporter for Logging {
    fn message(&self, level: Level, text: &str) {
        let level = match level {
            Level::Warning => "warning",
            _ => "info",
        };
        Logging::log(level, text);
    }

    fn progress(&self, what: &str) -> Box<dyn Progress> {
        Logging::log("info", what);
        Box::new(Quiet)
    }
}

/// A long step's updates, not logged (a kernel build has thousands).
struct Quiet;

impl Progress for Quiet {
    fn update(&self, _: &str) {}
}

/// Runs `f` without the GIL; its error becomes an `rrr.Error` of its kind.
fn step<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> rrr_orchestrator::Result<T> + Send,
) -> PyResult<T> {
    py.detach(f).map_err(error)
}

/// Builds the stimulus binary from C source `source`; returns its path.
#[pyfunction]
fn build_stimulus(py: Python<'_>, source: PathBuf) -> PyResult<PathBuf> {
    step(py, || stimulus::build(&source))
}

/// Builds the root filesystem that runs `stimulus` (a binary); returns its disk image.
#[pyfunction]
fn build_rootfs(py: Python<'_>, stimulus: PathBuf) -> PyResult<PathBuf> {
    step(py, || rootfs::build(&stimulus))
}

/// Builds a kernel (cached): from `src` (a tree or tarball; the distro's source by default)
/// or `git` at `commit`, with `config` (default: tinyconfig) and `fragments`, `patches` applied
/// to the source in order, reduced for the crash `report` if given. Returns its cache directory.
#[pyfunction]
#[pyo3(signature = (src=None, config=None, fragments=Vec::new(), git=None, commit=None, report=None, ccache=true, patches=Vec::new()))]
#[allow(clippy::too_many_arguments)]
fn build_kernel(
    py: Python<'_>,
    src: Option<PathBuf>,
    config: Option<PathBuf>,
    fragments: Vec<PathBuf>,
    git: Option<String>,
    commit: Option<String>,
    report: Option<PathBuf>,
    ccache: bool,
    patches: Vec<PathBuf>,
) -> PyResult<PathBuf> {
    let spec = KernelSpec {
        git,
        commit,
        config,
        report,
        fragments,
        patches,
        compiler: CompilerPlan {
            ccache,
            launcher: None,
        },
        ..KernelSpec::tiny(src.unwrap_or_else(|| DISTRO_SOURCE.into()))
    };
    step(py, || Ok(kernel::build(&spec)?.dir))
}

/// Fetches syzbot bug `bug` (its crash `crash`, or the newest with a reproducer) and builds
/// its kernel, reproducer and root filesystem. Returns (kernel directory, stimulus source,
/// stimulus binary, disk image, title).
#[pyfunction]
#[pyo3(signature = (bug, crash=None, syzbot_url=None))]
fn from_syzbot(
    py: Python<'_>,
    bug: String,
    crash: Option<usize>,
    syzbot_url: Option<String>,
) -> PyResult<(PathBuf, PathBuf, PathBuf, PathBuf, String)> {
    let spec = syzbot::BugSpec {
        bug,
        crash,
        syzbot_url: syzbot_url.unwrap_or_else(|| syzbot::DEFAULT_URL.to_owned()),
    };
    step(py, move || {
        let base = KernelSpec::tiny(DISTRO_SOURCE.into());
        let (kernel_spec, source) = syzbot_inputs(&spec, &base)?;
        let stim = stimulus::build(&source)?;
        let kernel = kernel::build(&kernel_spec)?;
        let disk = rootfs::build(&stim)?;
        let title = kernel_spec.title.unwrap_or_default();
        Ok((kernel.dir, source, stim, disk, title))
    })
}

/// Records `stimulus` (in `disk`) on the kernel in `kernel` (cached, as `rrr run` does);
/// returns the recording's directory.
#[pyfunction]
#[pyo3(signature = (kernel, stimulus, disk, timeout=120, engine="qemu", attempts=1, until_crash=false, rerecord=false))]
#[allow(clippy::too_many_arguments)]
fn record(
    py: Python<'_>,
    kernel: PathBuf,
    stimulus: PathBuf,
    disk: PathBuf,
    timeout: u64,
    engine: &str,
    attempts: u32,
    until_crash: bool,
    rerecord: bool,
) -> PyResult<PathBuf> {
    let engine: Engine = engine.parse().map_err(error)?;
    if attempts == 0 {
        return Err(BadInputError::new_err("attempts count from 1"));
    }
    let spec = RecordSpec {
        engine,
        timeout: Duration::from_secs(timeout),
        rerecord,
        attempts: Attempts {
            first: 1,
            count: attempts,
            until_crash,
        },
    };
    step(py, move || {
        let kernel = Kernel { dir: kernel };
        Ok(cached_recording(&spec, &kernel, &stimulus, &disk)?.dir)
    })
}

/// What a recording is: (outcome, instruction count, engine, kernel directory).
#[pyfunction]
fn recording_facts(dir: PathBuf) -> PyResult<(String, Option<u64>, String, PathBuf)> {
    let rec = Recording::open(&dir).map_err(error)?;
    Ok((
        rec.outcome.to_string(),
        rec.instructions,
        rec.engine.to_string(),
        rec.kernel.dir,
    ))
}

/// Traces the recording in `recording` into `out`, within the limits given (as `rrr trace`'s
/// options say). Returns (events, bytes, seconds, what was kept if cut, the crash's title and
/// trace time if it crashed).
#[pyfunction(name = "trace")]
#[pyo3(signature = (recording, out, max_size="512M", window=None, last=None, threads="all", only=Vec::new(), skip=Vec::new(), max_depth=None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn trace_recording(
    py: Python<'_>,
    recording: PathBuf,
    out: PathBuf,
    max_size: &str,
    window: Option<&str>,
    last: Option<u64>,
    threads: &str,
    only: Vec<String>,
    skip: Vec<String>,
    max_depth: Option<u32>,
) -> PyResult<(u64, u64, f64, Option<String>, Option<(String, Option<u64>)>)> {
    let bad = |e: String| BadInputError::new_err(e);
    let limits = Limits {
        max_size: parse_size(max_size).map_err(bad)?,
        window: window
            .map(|w| w.parse::<Window>().map_err(|e| bad(e.to_string())))
            .transpose()?
            .unwrap_or(Window::ALL),
        last,
        threads: parse_threads(threads).map_err(bad)?,
        only,
        skip,
        max_depth,
    };
    step(py, move || {
        let rec = Recording::open(&recording)?;
        let t = trace::trace(&rec, &out, &limits, Duration::from_secs(3600))?;
        let kept = t.kept.as_ref().map(ToString::to_string);
        Ok((t.events, t.bytes, t.elapsed.as_secs_f64(), kept, t.crash))
    })
}

/// Replays the recording in `recording` without tracing; returns (seconds, what the replay
/// proved).
#[pyfunction]
fn replay(py: Python<'_>, recording: PathBuf) -> PyResult<(f64, String)> {
    step(py, move || {
        let rec = Recording::open(&recording)?;
        let t = trace::replay(&rec, Duration::from_secs(3600))?;
        Ok((t.elapsed.as_secs_f64(), t.check))
    })
}

/// A server that lets ui.perfetto.dev open one trace (as `rrr serve`), in the background.
#[pyclass(module = "rrr._rrr")]
struct Server {
    port: u16,
    url: String,
    /// The server and the thread serving, until stopped.
    running: Mutex<Option<(Arc<TraceServer>, JoinHandle<()>)>>,
}

#[pymethods]
impl Server {
    /// Starts serving `trace` on 127.0.0.1:`port` (0: a free port).
    #[new]
    fn new(trace: PathBuf, port: u16) -> PyResult<Self> {
        let server = Arc::new(TraceServer::bind(&trace, port).map_err(error)?);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("rrr-serve".into())
            .spawn(move || serving.serve_forever())
            .map_err(error)?;
        Ok(Server {
            port: server.port(),
            url: server.url(),
            running: Mutex::new(Some((server, thread))),
        })
    }

    /// The port it listens on.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// The ui.perfetto.dev URL that opens the trace.
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }

    /// Whether it still serves.
    #[getter]
    fn serving(&self) -> bool {
        self.running.lock().is_ok_and(|r| r.is_some())
    }

    /// Stops serving and frees the port.
    fn stop(&self, py: Python<'_>) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((server, thread)) = running {
            server.stop();
            let port = self.port;
            py.detach(move || {
                let _ = thread.join();
                drop(server);
                // tiny_http's accept thread closes the listening socket after the server is
                // dropped, on its own time: wait until the port is free (at most 5 s).
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    }
}

/// A replay waiting for gdb (as `rrr replay --gdb`), in the background.
#[pyclass(module = "rrr._rrr")]
struct Gdb {
    replay: Mutex<Option<GdbReplay>>,
    command: String,
    note: String,
}

#[pymethods]
impl Gdb {
    /// Starts the replay of the recording in `recording` under a gdb stub on `port` (0: a
    /// free one), paused at its start; the command runs it to trace time `at`, if given.
    #[new]
    #[pyo3(signature = (recording, port=0, at=None))]
    fn new(py: Python<'_>, recording: PathBuf, port: u16, at: Option<u64>) -> PyResult<Self> {
        let rec = Recording::open(&recording).map_err(error)?;
        let replay = step(py, || GdbReplay::start(&rec, Some(port), at))?;
        Ok(Gdb {
            command: replay.command.clone(),
            note: replay.note.clone(),
            replay: Mutex::new(Some(replay)),
        })
    }

    /// The gdb command that attaches to it.
    #[getter]
    fn command(&self) -> String {
        self.command.clone()
    }

    /// Where it waits and what gdb can do there.
    #[getter]
    fn note(&self) -> String {
        self.note.clone()
    }

    /// Waits until gdb ends the replay (`kill`) or it reaches the recording's end.
    fn wait(&self, py: Python<'_>) -> PyResult<()> {
        match self.take() {
            Some(mut r) => step(py, move || r.wait()),
            None => Ok(()),
        }
    }

    /// Ends the replay now.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        match self.take() {
            Some(mut r) => step(py, move || r.stop()),
            None => Ok(()),
        }
    }
}

impl Gdb {
    /// The replay, if it has not ended yet (then it is no longer here).
    fn take(&self) -> Option<GdbReplay> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The workspace this module was built from: Perfetto's trace processor's scripts are there.
#[pyfunction]
fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Where the workspace's build of this module's profile is (`target/release` or
/// `target/debug`): the tracer plugins built with it are there.
#[pyfunction]
fn build_dir() -> PathBuf {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    workspace().join("target").join(profile)
}

/// The `rrr._rrr` module.
#[pymodule]
fn _rrr(m: &Bound<'_, PyModule>) -> PyResult<()> {
    set_reporter(Arc::new(Logging));
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("NetworkError", py.get_type::<NetworkError>())?;
    m.add("BuildError", py.get_type::<BuildError>())?;
    m.add("PatchError", py.get_type::<PatchError>())?;
    m.add("RecordingError", py.get_type::<RecordingError>())?;
    m.add("ReplayDivergedError", py.get_type::<ReplayDivergedError>())?;
    m.add("BadInputError", py.get_type::<BadInputError>())?;
    m.add("MissingToolError", py.get_type::<MissingToolError>())?;
    m.add_function(wrap_pyfunction!(build_stimulus, m)?)?;
    m.add_function(wrap_pyfunction!(build_rootfs, m)?)?;
    m.add_function(wrap_pyfunction!(build_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(from_syzbot, m)?)?;
    m.add_function(wrap_pyfunction!(record, m)?)?;
    m.add_function(wrap_pyfunction!(recording_facts, m)?)?;
    m.add_function(wrap_pyfunction!(trace_recording, m)?)?;
    m.add_function(wrap_pyfunction!(replay, m)?)?;
    m.add_function(wrap_pyfunction!(workspace, m)?)?;
    m.add_function(wrap_pyfunction!(build_dir, m)?)?;
    m.add_class::<Server>()?;
    m.add_class::<Gdb>()?;
    Ok(())
}
