"""The notebooks run top to bottom in a kernel of the project's own Python, on the embedded local
setup (the session's temporary HELIOS_HOME, where `trained_arena` left arena's models)."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import AS_OF, FIXTURE_TENANTS, REPO

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)

NOTEBOOKS = REPO / "notebooks"
KERNEL = "helios-venv"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec that starts this interpreter (the venv's), found through JUPYTER_PATH, and the
    parameters the notebooks read from the environment."""
    jupyter = tmp_path_factory.mktemp("jupyter")
    spec = jupyter / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Helios (.venv)",
        "language": "python",
    }))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter))
        patch.setenv("HELIOS_TENANT", "arena")
        patch.setenv("HELIOS_CONFIG_DIR", str(FIXTURE_TENANTS))
        patch.setenv("HELIOS_AS_OF", AS_OF.isoformat())
        patch.setenv("MPLBACKEND", "Agg")
        yield


def run(name: str, tmp_path) -> str:
    """Execute a notebook (any cell error fails the test) and return its text outputs."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def test_notebooks_import_library_code_and_run_in_the_venv_kernel(kernel_env, tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "from helios_pipelines.core" in source, path.name
        assert "def " not in source and "class " not in source, f"{path.name} defines logic of its own"


def test_explore_shows_the_metrics_and_the_data_quality_report(kernel_env, tmp_path):
    text = run("01_explore_tenant.ipynb", tmp_path)
    assert "Arena Test Tenant (arena): 864 rows of 3 metrics" in text
    assert "tenant 'arena': 864 rows" in text
    assert "columns:" in text and "concurrent_users" in text


def test_prototype_is_backtested_tracked_and_judged_against_the_champion(kernel_env, trained_arena, tmp_path):
    from helios_pipelines.core.ml.tracking import Tracker, experiment_name

    text = run("02_prototype_vs_champion.ipynb", tmp_path)
    assert "champion: v" in text  # trained_arena left a champion to compare with
    assert "promote: " in text or "keep the champion: " in text
    tracker = Tracker()
    experiment = tracker.client.get_experiment_by_name(experiment_name("arena"))
    runs = tracker.client.search_runs([experiment.experiment_id], "tags.origin = 'notebook'")
    assert runs and "mase" in runs[0].data.metrics


def test_registry_review_lists_champions_history_and_a_forecast(kernel_env, trained_arena, tmp_path):
    text = run("03_review_registry.ipynb", tmp_path)
    assert "3 registered models for arena" in text
    assert "arena_concurrent_users_forecaster" in text and "champion" in text
    assert "yhat" in text  # the champion's forecast table
