"""The Python API end to end on the example stimulus with the tiny kernel (cached in rrr's
cache, as the command line caches it): build, record, trace, query, serve; and bad input."""

import socket
import urllib.request
from pathlib import Path

import pytest

import rrr

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
PATH_IN_EXAMPLE = "/tmp/rrr-example.txt"


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    kernel = rrr.Kernel()
    rootfs = rrr.Rootfs(rrr.Stimulus(EXAMPLES / "open-write-read.c"))
    record = rrr.record(kernel, rootfs, timeout=60)
    out = tmp_path_factory.mktemp("trace") / "example.pftrace"
    return kernel, rootfs, record, rrr.trace(kernel, rootfs, record, out=out)


def test_a_trace_of_the_example_holds_its_syscalls_with_their_arguments(traced):
    kernel, rootfs, record, trace = traced
    assert trace.path.is_file() and trace.size == trace.path.stat().st_size
    assert trace.events > 1000 and trace.kept is None
    rows = trace.query(
        "select t.name, extract_arg(s.arg_set_id, 'debug.filename') from slice s "
        "join thread_track tt on s.track_id = tt.id join thread t using (utid) "
        "where s.name = 'do_sys_openat2' and t.name = 'stimulus'"
    )
    assert ("stimulus", PATH_IN_EXAMPLE) in rows, rows
    assert "do_sys_openat2" not in repr(trace) and f"{trace.events:,} events" in repr(trace)
    assert record.outcome in repr(record) and str(record.dir) in repr(record)
    assert str(kernel.dir) in repr(kernel) and kernel.vmlinux.is_file()
    assert "open-write-read.c" in repr(rootfs)


def _files(dir: Path):
    """Each file under ``dir`` with its inode and modification time: a cache entry made again
    is a new directory renamed into place, with new inodes."""
    return {(p.relative_to(dir), p.stat().st_ino, p.stat().st_mtime_ns) for p in dir.rglob("*")}


def test_the_same_steps_again_come_from_the_cache(traced):
    kernel, rootfs, record, _ = traced
    recording, built = _files(record.dir), _files(kernel.dir)
    again = rrr.record(
        rrr.Kernel(), rrr.Rootfs(rrr.Stimulus(EXAMPLES / "open-write-read.c")), timeout=60
    )
    # The same recording, untouched: no emulator ran and no kernel was built.
    assert again.dir == record.dir and again.outcome == record.outcome
    assert _files(record.dir) == recording and recording
    assert rrr.Kernel().dir == kernel.dir and _files(kernel.dir) == built
    assert rrr.Rootfs(rootfs.stimulus).disk == rootfs.disk


def test_a_budget_and_focus_are_keyword_arguments(traced, tmp_path):
    kernel, rootfs, record, whole = traced
    t = rrr.trace(kernel, rootfs, record, out=tmp_path / "focus.pftrace", threads="stimulus", max_depth=2)
    assert 0 < t.events < whole.events
    names = {r[0] for r in t.query("select distinct t.name from thread t join thread_track using (utid)")}
    # The example's third thread renames itself; no kernel thread is left.
    assert names == {"stimulus", "rrr-renamed"}, names
    with pytest.raises(rrr.BadInputError, match="not a size"):
        rrr.trace(kernel, rootfs, record, out=tmp_path / "bad.pftrace", max_size="big")


def test_serve_trace_serves_the_file_to_the_ui_and_stop_frees_the_port(traced):
    trace = traced[3]
    server = rrr.serve_trace(trace, port=0)
    port = server.port
    assert server.url.startswith("https://ui.perfetto.dev/#!/?url=http://127.0.0.1:")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{trace.path.name}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "https://ui.perfetto.dev"
        assert response.read() == trace.path.read_bytes()
    assert "open https://ui.perfetto.dev" in repr(server)
    server.stop()
    assert "stopped" in repr(server)
    # A new server can listen there (as any server does, past the old connections' TIME_WAIT).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_a_replay_under_gdb_gives_the_command_and_stops(traced):
    record = traced[2]
    gdb = rrr.replay(record, gdb=True)
    assert gdb.command.startswith("gdb -ex 'target remote 127.0.0.1:")
    assert gdb.command.endswith("vmlinux") and str(gdb) == gdb.command
    gdb.stop()
    assert "the replay" in rrr.replay(record, gdb=False)


def test_a_stimulus_that_does_not_compile_raises_the_compilers_message(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return missing; }\n")
    with pytest.raises(rrr.BuildError, match="missing"):
        rrr.Stimulus(bad)
    with pytest.raises(rrr.BadInputError, match="not a recording"):
        rrr.Recording(tmp_path)


def test_kernel_patches_are_applied_in_order_and_one_that_does_not_apply_says_so(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tree = tmp_path / "linux"
    (tree / "kernel").mkdir(parents=True)
    (tree / "Makefile").write_text("tinyconfig:\n\t@echo 'no kernel here' >&2; exit 2\n")
    (tree / "kernel" / "a.c").write_text("one\ntwo\nthree\n")
    fix = tmp_path / "fix.patch"
    fix.write_text("--- a/kernel/a.c\n+++ b/kernel/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n")
    # Applied: the build goes on to make, which fails here.
    with pytest.raises(rrr.BuildError, match="make tinyconfig failed"):
        rrr.Kernel(src=tree, patches=[fix])
    # The same patch twice: the second finds it applied.
    with pytest.raises(rrr.PatchError, match=r"(?s)the patch .*fix\.patch does not apply.*kernel/a\.c"):
        rrr.Kernel(src=tree, patches=[fix, fix])
    assert (tree / "kernel" / "a.c").read_text() == "one\ntwo\nthree\n"
