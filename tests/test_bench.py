"""The benchmark cannot rot: its smoke mode runs every measurement end to end (the Ray stage takes most of it)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = {
    "forward_images_per_second",
    "extract_images_per_second",
    "extract_vs_forward",
    "per_image_images_per_second",
    "extract_vs_per_image",
    "frozen_fit_epoch_seconds",
    "cache_vs_frozen_fit",
    "head_4000_steps_seconds",
    "warm_rerun_seconds",
    "augmented_warm_vs_plain_warm",
    "quick_flowers_test_accuracy",
    "quick_flowers_first_model_seconds",
    "predict_p50_ms",
    "predict_p95_ms",
    "cache_peak_rss_mb",
    "quick_flowers_test_accuracy_seed0",
    "hostile_zip_peak_rss_mb",
    "quick_flowers_bytes_top1_agreement",
    "quick_flowers_bytes_max_prob_diff",
}
# Figures the smoke run cannot have: its tiny backbone runs on TensorFlow only, and it has no Lite2, Lite0 + Lite1
# pair or grocery run.
NOT_IN_SMOKE = {
    "litert_extract_vs_tf_forward",
    "quick_flowers_test_accuracy_lite2",
    "quick_flowers_test_accuracy_pair_mirror_seed0",
    "quick_flowers_test_accuracy_pair_mirror_min",
    "grocery_test_accuracy_lite2",
}
# The Ray engine's stage (bench/scale.py): measured when the scale extra is installed (CI installs it), else null.
SCALE = {
    "ray_vs_local_extract",
    "ray_vs_local_extract_whole_job",
    "ray_1_actor_images_per_second",
    "ray_2_actors_images_per_second",
    "two_node_nodes_used",
}
RAY_INSTALLED = importlib.util.find_spec("ray") is not None


def test_smoke_run_prints_every_figure_and_writes_the_table(tmp_path):
    results = REPO / "bench" / "results.md"
    before = results.read_bytes() if results.exists() else None
    output = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures) == FIGURES | NOT_IN_SMOKE | SCALE
    assert all(isinstance(figures[name], float | int) and figures[name] >= 0 for name in FIGURES), figures
    assert all(figures[name] is None for name in NOT_IN_SMOKE), figures
    if RAY_INSTALLED:
        assert all(figures[name] > 0 for name in SCALE), figures
        # Both nodes held a loaded actor (two_node_actors, in the table); which computed is Ray Data's choice.
        assert 1 <= figures["two_node_nodes_used"] <= 2
    else:
        assert all(figures[name] is None for name in SCALE), figures
    per_backbone = json.loads((tmp_path / "backbones.smoke.json").read_text())
    (row,) = per_backbone["backbones"].values()
    assert set(row) == {
        "extract_litert_images_per_second",
        "extract_tf_images_per_second",
        "quick_flowers_test_accuracy",
        "model_mb",
        "predict_p50_ms",
    }
    assert all(value >= 0 for value in row.values()) and "load average" in per_backbone["conditions"]
    table = output.read_text()
    assert "| figure | value | goal | met? |" in table and "## Per backbone" in table
    for name in FIGURES | SCALE:
        assert f"`{name}`" in table, name
    if RAY_INSTALLED:
        assert "`ray_init_seconds`" in table  # the stage's other figures, kept for the record
        assert "| `two_node_nodes` | 2 |" in table and "| `two_node_actors` | 2 |" in table
    if importlib.util.find_spec("ai_edge_litert"):  # predict latency with the backbone on each runtime, side by side
        for name in ("predict_p50_ms_litert", "predict_p50_ms_tensorflow", "predict_tensorflow_vs_litert"):
            assert f"`{name}`" in table, name
    for field in ("cpu", "cores", "tensorflow", "date", "command"):
        assert f"| {field} |" in table, field
    assert (results.read_bytes() if results.exists() else None) == before, "smoke must not touch bench/results.md"


def test_smoke_refuses_to_write_the_real_results():
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--output", "bench/results.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "never writes bench/results.md" in done.stderr


def test_scale_stage_without_ray_leaves_its_figures_null_and_fails_nothing(tmp_path):
    hidden = tmp_path / "hide" / "ray"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError(\"No module named 'ray' (hidden by the test)\")\n")
    search_path = [str(hidden.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, search_path))}
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--stages", "scale", "--output", str(tmp_path / "results.md")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(figures[name] is None for name in SCALE), figures
    assert "scale: skipped" in done.stderr and "requirements-scale.txt" in done.stderr
    assert "Stages that failed" not in (tmp_path / "results.md").read_text()
