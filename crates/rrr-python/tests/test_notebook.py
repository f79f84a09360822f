"""examples/rrr.ipynb runs clean, top to bottom, and its query finds the example's open."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_notebook_runs_clean():
    nb = nbformat.read(EXAMPLES / "rrr.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "do_sys_openat2(" in printed and "/tmp/rrr-example.txt" in printed, printed
