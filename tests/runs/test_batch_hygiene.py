"""A NaN image is an error row naming its index and the batch goes on; a finished run
leaves no empty files (no empty log, no lock file)."""

from __future__ import annotations

import numpy as np

import milpverify


def _data_with_nan(tmp_path):
    _, images, labels = milpverify.load_default()
    pixels = images[:3] * 255.0  # float pixels; the run divides by 255
    pixels[1, 0, 5, 5] = np.nan
    np.savez(tmp_path / "nan.npz", images=pixels, labels=labels[:3])
    return tmp_path / "nan.npz"


def test_nan_image_is_an_error_row_and_the_batch_goes_on(tmp_path):
    result = milpverify.evaluate("default", data=_data_with_nan(tmp_path), eps=0.05,
                                 methods="fgsm", out=tmp_path / "run", quiet=True, report=False)
    by_index = {r["index"]: r for r in result.rows}
    assert by_index[1]["status"] == "error" and by_index[1]["pred"] == -1
    assert "image 1 has 1 NaN pixel(s)" in by_index[1]["message"]
    assert by_index[0]["status"] != "error" and by_index[2]["status"] != "error"
    assert result.warnings == []  # accuracy over the images that have a prediction
    assert "image 1 has 1 NaN" in (tmp_path / "run" / "run.log").read_text()


def test_finished_run_leaves_no_empty_files(tmp_path):
    milpverify.evaluate("default", indices="0:2", eps=0.05, methods="fgsm",
                        out=tmp_path / "run", quiet=True)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files and all(p.stat().st_size > 0 for p in files), [
        p.name for p in files if p.stat().st_size == 0]
    assert not (tmp_path / "run" / ".lock").exists()
    assert not (tmp_path / "run" / "run.log").exists()  # nothing was logged


def test_rho_table_leaves_no_lock_beside_the_csv(tmp_path):
    from milpverify.runs.evaluate import rho_table
    rho_table("default", indices="1", eps_cap=0.1, out=tmp_path / "r.csv", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.stat().st_size == 0) == []
    assert not (tmp_path / "r.lock").exists()
