"""A real Jupyter kernel (nbclient + ipykernel) runs a notebook the way d6tflow users work: cells
calling the synchronous `af.run()` and `flow.run()`-style helpers inside the kernel's running loop."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

CELLS = [
    "import asyncflow as af\naf.settings.execution_summary = False",
    "@af.task\nasync def nb_square(x: int) -> int:\n    return x * x",
    "out = af.run([nb_square(x=2), nb_square(x=3)], store='store')\nprint('outputs', out)",
    "flow = af.Workflow(nb_square(x=4), store='store')\nresult = await flow.run()\nprint('awaited', result.ran)",
    "print('again', af.run(nb_square(x=2), store='store'))",
]


def test_af_run_works_in_a_notebook_cell(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text = "\n".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert "outputs [4, 9]" in text and "awaited 1" in text and "again 4" in text, text
    assert (tmp_path / "store" / "nb_square").is_dir()
