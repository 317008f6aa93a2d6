"""What bench/ measured about each backbone, for the backbone picker: only figures a benchmark produced.

`python bench/run.py` writes bench/backbones.json (speed, accuracy and size per backbone, with when and
under what load). The picker reads it; a backbone, or a figure, that is not in it shows as "not measured".
A missing or damaged file means nothing was measured, never an error: the picker is a guide, not a gate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline.backbones.registry import list_backbones

MEASURED_FILE = Path(__file__).resolve().parents[2] / "bench" / "backbones.json"
NOT_MEASURED = "not measured"
# Figure name in backbones.json → (column heading, format of its value).
COLUMNS = {
    "extract_litert_images_per_second": ("Extraction, LiteRT (img/s)", "{:.0f}"),
    "extract_tf_images_per_second": ("Extraction, TensorFlow (img/s)", "{:.0f}"),
    "flowers_test_accuracy": ("Flowers test accuracy", "{:.3f}"),
    "model_mb": ("Exported model (MB)", "{:.1f}"),
    "predict_p50_ms": ("Predict p50 (ms)", "{:.0f}"),
}


def read_measurements(path: Path = MEASURED_FILE) -> dict:
    """The whole of backbones.json ({"backbones": {name: {figure: value}}, "measured": ...}); {} if unusable."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON: nothing measured
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("backbones"), dict) else {}


def backbone_table(path: Path = MEASURED_FILE) -> list[dict[str, str]]:
    """One row per built-in backbone: its name, input size, offline or not, and each measured figure."""
    measured = read_measurements(path).get("backbones", {})
    rows = []
    for info in list_backbones():
        figures = measured.get(info.name) if isinstance(measured.get(info.name), dict) else {}
        row = {"Backbone": info.name, "Input (px)": str(info.input_size), "Offline": "yes" if info.offline else "no"}
        for figure, (heading, style) in COLUMNS.items():
            row[heading] = _formatted(figures.get(figure), style)
        rows.append(row)
    return rows


def measured_note(path: Path = MEASURED_FILE) -> str:
    """Where the figures come from (date, machine load), or why there are none."""
    data = read_measurements(path)
    if not data:
        return f"No benchmark results in {path.name} yet: every figure is {NOT_MEASURED!r}. Run `python bench/run.py`."
    return f"Measured by bench/run.py ({data.get('measured', 'date unknown')}; {data.get('conditions', '')})".strip()


def _formatted(value: object, style: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return NOT_MEASURED
    return style.format(value)
