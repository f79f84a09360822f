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


def test_the_same_steps_again_come_from_the_cache(traced):
    kernel, rootfs, record, _ = traced
    again = rrr.record(rrr.Kernel(), rrr.Rootfs(rrr.Stimulus(EXAMPLES / "open-write-read.c")))
    assert again.dir != record.dir or again.outcome == record.outcome
    assert rrr.Kernel().dir == kernel.dir
    assert rrr.Rootfs(rootfs.stimulus).disk == rootfs.disk


def test_a_budget_and_focus_are_keyword_arguments(traced, tmp_path):
    kernel, rootfs, record, whole = traced
    t = rrr.trace(kernel, rootfs, record, out=tmp_path / "focus.pftrace", threads="stimulus", max_depth=2)
    assert 0 < t.events < whole.events
    names = {r[0] for r in t.query("select distinct t.name from thread t join thread_track using (utid)")}
    # The example's third thread renames itself; no kernel thread is left.
    assert names == {"stimulus", "rrr-renamed"}, names
    with pytest.raises(rrr.Error, match="not a size"):
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
    with pytest.raises(rrr.Error, match="missing"):
        rrr.Stimulus(bad)
    with pytest.raises(rrr.Error):
        rrr.Recording(tmp_path)
