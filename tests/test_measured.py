"""The backbone picker's figures: only what bench/ wrote, "not measured" for the rest, never an error."""

from __future__ import annotations

import json

from pipeline.backbones.measured import NOT_MEASURED, backbone_table, measured_note


def test_figures_come_from_the_bench_file_only(tmp_path):
    path = tmp_path / "backbones.json"
    path.write_text(
        json.dumps(
            {
                "measured": "2026-11-30 08:00 UTC",
                "conditions": "load 3.1",
                "backbones": {
                    "efficientnet_lite2": {
                        "flowers_test_accuracy": 0.9512,
                        "model_mb": 24.41,
                        "predict_p50_ms": None,
                        "extract_litert_images_per_second": "fast",
                    }
                },
            }
        )
    )
    rows = {row["Backbone"]: row for row in backbone_table(path)}
    assert set(rows) >= {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    lite2 = rows["efficientnet_lite2"]
    assert lite2["Flowers test accuracy"] == "0.951" and lite2["Exported model (MB)"] == "24.4"
    assert lite2["Input (px)"] == "260" and lite2["Offline"] == "yes"
    assert lite2["Predict p50 (ms)"] == NOT_MEASURED  # null
    assert lite2["Extraction, LiteRT (img/s)"] == NOT_MEASURED  # not a number
    assert all(
        value == NOT_MEASURED
        for key, value in rows["efficientnet_lite0"].items()
        if key not in ("Backbone", "Input (px)", "Offline")
    )
    assert "2026-11-30 08:00 UTC" in measured_note(path) and "load 3.1" in measured_note(path)


def test_missing_or_damaged_file_means_nothing_measured(tmp_path):
    for content in (
        None,
        b'{"backbones": {"efficientnet_lite0": ',
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"backbones": {"efficientnet_lite0": [0.93]}}',
    ):
        path = tmp_path / "backbones.json"
        if content is not None:
            path.write_bytes(content)
        rows = backbone_table(path)
        assert rows and all(row["Flowers test accuracy"] == NOT_MEASURED for row in rows)
    assert "not measured" in measured_note(tmp_path / "absent.json")


def test_configure_page_shows_the_table(tmp_path, monkeypatch):
    from test_app_dataset import app, with_dataset

    from pipeline.backbones import measured

    path = tmp_path / "backbones.json"
    path.write_text(json.dumps({"measured": "today", "backbones": {"efficientnet_lite1": {"model_mb": 21.7}}}))
    monkeypatch.setattr(measured, "MEASURED_FILE", path)
    monkeypatch.setattr(measured.backbone_table, "__defaults__", (path,))
    monkeypatch.setattr(measured.measured_note, "__defaults__", (path,))
    monkeypatch.setenv("RETRAIN_STUDIO_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    at = app(with_dataset(tmp_path, {"red": 6, "blue": 6}), "pages/configure.py")
    table = next(frame.value for frame in at.dataframe if "Backbone" in frame.value.columns)
    lite1 = table[table["Backbone"] == "efficientnet_lite1"].iloc[0]
    assert lite1["Exported model (MB)"] == "21.7" and lite1["Flowers test accuracy"] == NOT_MEASURED
    assert any("today" in caption.value for caption in at.caption)
