"""The Report: numbers checked by hand on a small confusion."""

import numpy as np

from pipeline.evaluate import Report, build_report


def test_report_numbers_by_hand(tmp_path):
    labels = ["cat", "dog", "fox"]
    truth = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05]]
    )
    files = [f"img{i}.jpg" for i in range(6)]
    report = build_report(truth, probabilities, labels, files)
    assert report.test_accuracy == 4 / 6
    assert report.top5_accuracy == 1.0
    assert report.confusion_matrix == [[1, 1, 0], [0, 2, 0], [0, 1, 1]]
    assert report.per_class["dog"].precision == 0.5 and report.per_class["dog"].recall == 1.0
    assert report.per_class["fox"].precision == 1.0 and report.per_class["fox"].recall == 0.5
    assert [m.file for m in report.misclassified] == ["img5.jpg", "img1.jpg"]  # most confident first
    assert report.misclassified[0].predicted_label == "dog" and report.misclassified[0].confidence == 0.9
    assert [p.file for p in report.predictions] == files and report.predictions[0].predicted_label == "cat"
    report.extra["export_parity"] = {"keras": 0.0}
    report.save(tmp_path / "report.json")
    loaded = Report.load(tmp_path / "report.json")
    assert loaded == report
    assert "dog" in report.table() and "0.6667" in report.table()


def test_empty_test_set_does_not_crash():
    report = build_report(np.array([], dtype=int), np.zeros((0, 2)), ["a", "b"], [])
    assert report.test_images == 0 and report.test_accuracy == 0.0


def test_top5_with_many_classes_and_a_class_without_test_images():
    labels = [f"c{i}" for i in range(7)]
    truth = np.array([0, 1, 2])
    probabilities = np.full((3, 7), 0.01)
    probabilities[0, [6, 5, 4, 3, 0]] = [0.5, 0.2, 0.1, 0.1, 0.05]  # true class 5th: top-5 hit
    probabilities[1, [6, 5, 4, 3, 2]] = [0.5, 0.2, 0.1, 0.1, 0.05]  # true class not in top 5
    probabilities[2, 2] = 0.9
    report = build_report(truth, probabilities, labels, ["a", "b", "c"])
    assert report.test_accuracy == 1 / 3 and report.top5_accuracy == 2 / 3
    assert report.per_class["c5"].support == 0 and report.per_class["c5"].recall == 0.0


def test_reports_written_before_predictions_existed_still_load(tmp_path):
    import json

    report = build_report(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"], ["x", "y"])
    data = report.to_dict()
    del data["predictions"]
    (tmp_path / "report.json").write_text(json.dumps(data))
    loaded = Report.load(tmp_path / "report.json")
    assert loaded.predictions == [] and loaded.test_accuracy == 1.0
