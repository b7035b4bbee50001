"""summary.md's "correctly classified points" table counts statuses and times over those
points only, not over every row of the method."""

from __future__ import annotations

import numpy as np

from milpverify.runs import metrics


def _row(index, status, upper, *, label, pred, seconds):
    return {"index": index, "method": "exact", "status": status, "lower": 0.01, "upper": upper,
            "label": label, "pred": pred, "seconds": seconds}


def test_correct_population_counts_its_own_statuses_and_time():
    rows = [_row(0, "optimal", 0.02, label=1, pred=1, seconds=1.0),
            _row(1, "optimal", 0.04, label=2, pred=2, seconds=3.0),
            _row(2, "time_limit", 0.5, label=3, pred=5, seconds=60.0)]  # misclassified
    every = metrics.summarize_method(rows, "exact", 0.1)
    correct = metrics.summarize_method(rows, "exact", 0.1, population="correct")
    assert every.statuses == {"optimal": 2, "time_limit": 1}
    assert (every.median_s, every.total_s) == (3.0, 64.0)
    assert correct.statuses == {"optimal": 2}
    assert (correct.median_s, correct.total_s) == (2.0, 4.0)
    assert correct.accuracy == every.accuracy  # accuracy is what defines the population
    table_all = metrics.summary_table({"exact": every})
    table_correct = metrics.summary_table({"exact": correct})
    assert "time_limit" in table_all and "time_limit" not in table_correct


def test_evaluate_summary_tables_differ_on_a_mixed_run(tmp_path):
    """A data file whose label 0 is wrong for image 1: the second table leaves it out."""
    import milpverify
    from milpverify.runs.datasets import DATA_DIR, DEFAULT_IMAGES
    with np.load(DATA_DIR / DEFAULT_IMAGES) as data:
        images, labels = data["images"][:3], data["labels"][:3].copy()
    labels[1] = (labels[1] + 1) % 10
    np.savez(tmp_path / "mixed.npz", images=images, labels=labels)
    result = milpverify.evaluate("default", data=tmp_path / "mixed.npz", eps=0.05,
                                 methods="lp", out=tmp_path / "run", quiet=True)
    every, correct = result.summaries["lp"], result.summaries_correct["lp"]
    assert (every.points, correct.points) == (3, 2)
    assert sum(every.statuses.values()) == 3 and sum(correct.statuses.values()) == 2
    text = (tmp_path / "run" / "summary.md").read_text()
    first, second = text.split("## Correctly classified points only")
    assert metrics.summary_table(result.summaries_correct, pixel_divisor=255.0) in second
    assert "| lp | 3 |" in first and "| lp | 2 |" in second
