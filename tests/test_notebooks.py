"""The notebooks in examples/ run top to bottom on tiny settings (LI2_EXAMPLE_SIZE=tiny), print nothing on
stderr (no warning, no traceback) and leave no output in the repository."""
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_there_are_three_notebooks_stored_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["01_train_and_inspect.ipynb", "02_energy_landscape.ipynb",
                                           "03_phase_study.ipynb"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code"), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LI2_EXAMPLE_SIZE", "tiny")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    book = nbformat.read(path, as_version=4)
    # IPC transport: a TCP kernel warns on stderr that its traffic is unencrypted
    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel"))
    try:
        NotebookClient(book, km=kernel, timeout=900, resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        kernel.shutdown_kernel(now=False)
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert errors == [], errors
    assert any("image/png" in o.get("data", {}) for o in outputs), "a notebook that draws nothing"
