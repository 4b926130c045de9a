"""examples/notebook.ipynb runs top to bottom in a real Jupyter kernel (nbclient).

A cell that raises fails the test (``CellExecutionError`` names the cell);
the notebook's own asserts check what its text claims: the progress bar,
an interrupt that leaves the executor running, re-runs that send only what
is missing and then nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"
CELL_TIMEOUT = 60
KERNEL = "apiexec-tests"


def _kernel_for_this_interpreter(root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec running *this* interpreter (where apiexec is installed), or skip/fail.

    A "python3" spec found on the machine may belong to another Python; this
    one is written to a private Jupyter path, so the notebook runs with the
    packages under test.
    """
    try:
        import ipykernel  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no Jupyter kernel: {exc} (CI is set: not skipping)")
        pytest.skip(f"no Jupyter kernel: {exc} (pip install ipykernel)")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(root), os.environ.get("JUPYTER_PATH")])))
    return KERNEL


def test_the_committed_notebook_carries_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    stale = [n for n, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.get("outputs")]
    assert not stale, f"cells {stale} carry outputs: clear them before committing"


def test_the_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Run the set-up cell twice, as a user re-running it would: the second run
    # must stop the first one's executor, endpoint and server, not pile up.
    setup = next(n for n, cell in enumerate(notebook.cells) if "cell_resources = ExitStack()" in cell.source)
    notebook.cells.insert(setup + 1, nbformat.from_dict(dict(notebook.cells[setup])))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name=_kernel_for_this_interpreter(tmp_path / "jupyter", monkeypatch),
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    except (nbclient.exceptions.DeadKernelError, RuntimeError) as exc:
        if "CellExecutionError" in type(exc).__name__ or os.environ.get("CI"):
            raise
        pytest.skip(f"the Jupyter kernel did not start: {exc}")
    text = "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("output_type") == "stream"
    )
    assert text.count("ExecutorState.RUNNING") == 2
    assert "100 answers; 0 failed" in text
    assert "interrupted with" in text
    assert "sent 0" in text
    assert "calls:" in text and "100/100" in text  # the progress bar drew
