"""The notebooks in notebooks/ run top to bottom (small settings), and are kept in git without outputs."""
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
STEPS = ("explore", "features", "statistical_models", "lstm_autoencoder", "compare_and_deploy")


def test_the_five_steps_are_there_and_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat", reason="the notebooks extra (nbformat) is not installed")
    assert [p.stem.split("_", 1)[1] for p in NOTEBOOKS] == list(STEPS)
    for path in NOTEBOOKS:
        book = nbformat.read(str(path), as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code, path.name
        assert all(c.outputs == [] and c.execution_count is None for c in code), (
            "%s holds outputs: clear them before committing (jupyter nbconvert --clear-output --inplace)" % path.name)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_runs(path, tmp_path):
    pytest.importorskip("nbclient", reason="the notebooks extra (nbclient, ipykernel) is not installed")
    pytest.importorskip("pandas", reason="the notebooks extra (pandas) is not installed")
    pytest.importorskip("tensorflow")
    import nbformat
    from nbclient import NotebookClient
    book = nbformat.read(str(path), as_version=4)
    # a fresh folder per notebook: each makes its own data and models under work/
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
