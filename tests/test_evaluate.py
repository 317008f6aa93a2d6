"""The Report: numbers checked by hand on a small confusion."""

import numpy as np

from pipeline.evaluate import Report, build_report


def test_report_numbers_by_hand(tmp_path):
    labels = ["cat", "dog", "fox"]
    truth = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
                              [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05]])
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
