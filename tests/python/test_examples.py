"""The Python examples run as the README and their docstrings say, on small generated data."""
import os
import pathlib
import subprocess
import sys


import kclip
from conftest import BUILD
from data_fixtures import CharacterTeacher, write_pairs

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_training_from_a_torch_dataloader(tmp_path):
    csv = write_pairs(tmp_path / "data", 40)
    captions = [row.split(",", 1)[1] for row in csv.read_text().splitlines()[1:]]
    cache = kclip.EmbeddingCache.build(str(tmp_path / "cache"), CharacterTeacher(), captions, progress=False)
    kclip.KMeans(4, iters=10).fit(cache.get(sorted(set(captions)))).save(str(tmp_path / "concepts.safetensors"))
    out = subprocess.run(
        [sys.executable, ROOT / "examples/python/train_from_torch_dataloader.py", "--pairs", csv, "--teacher-cache",
         tmp_path / "cache", "--concepts", tmp_path / "concepts.safetensors", "--steps", "6", "--batch-size", "8",
         "--workers", "2", "--out", tmp_path / "runs"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(BUILD / "python")))
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith("step")]
    assert len(losses) == 6 and all(loss == loss for loss in losses)
    saved = tmp_path / "runs/torch-dataloader/checkpoints/step_00000006"
    assert (saved / "model.safetensors").exists() and str(saved) in out.stdout


def test_the_notebook_executes_top_to_bottom(shared, monkeypatch):
    """examples/notebooks/knowledge_clip.ipynb, committed without outputs, runs in a fresh kernel."""
    import nbclient  # Debian's python3-nbclient (scripts/install-deps.sh)
    import nbformat

    shared("models/stories15M/stories15M.bin")
    path = ROOT / "examples/notebooks/knowledge_clip.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in notebook.cells if c.cell_type == "code")
    monkeypatch.setenv("KCLIP_SHARED", str(shared(".")))  # the kernel inherits this environment
    monkeypatch.setenv("PYTHONPATH", str(BUILD / "python"))
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "concept 7" in text and "'R@1'" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the photos and the loss plot
