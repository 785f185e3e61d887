"""The demo's pipeline (what ``make demo`` runs) end to end at a micro scale."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.mark.slow
def test_demo_pipeline_runs_end_to_end(tmp_path):
    # The whole demo path at a micro scale: prepare, 4 trainings, evaluation, fusion, PNGs.
    import torch

    from mvaccel.demo import DemoConfig, run

    cfg = DemoConfig(
        classes=("MoveRight", "RotateCW"), train_per_class=2, test_per_class=1, frames=10,
        height=48, width=64, size=48, new_length=2, epochs=2, rgb_epochs=1, test_segments=2,
    )  # fmt: skip
    threads = torch.get_num_threads()
    report = run(tmp_path, cfg)
    assert torch.get_num_threads() == threads
    res = report["results"]
    assert set(res) == {"teacher_flow", "rgb_cnn", "mv_cnn_scratch", "mv_cnn_st_ti_dc"}
    assert all(0.0 <= r["top1"] <= 1.0 and r["cnn_fps"] > 0 for r in res.values())
    assert res["mv_cnn_scratch"]["motion_fps"] > 0 and res["teacher_flow"]["motion_fps"] > 0
    for k in ("motion_0", "motion_1", "confusion", "accuracy_fps"):
        img = np.asarray(Image.open(report["pngs"][k]))
        assert img.ndim == 3 and img.std() > 1 and img.shape[1] >= 450  # readable figures
    text = (tmp_path / "report.md").read_text()
    assert "| stream |" in text and "| method | test input |" in text
    assert "](confusion_dtmv.png)" in text and "](accuracy_vs_fps.png)" in text
    assert text.count("](motion_") == 2  # one figure per class (two classes here)
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("| stream |") and "| method | test input |" in md
    assert [m["name"] for m in report["methods"]][:2] == [
        "MV-CNN from scratch",
        "DTMV-CNN ST+TI+DC",
    ]
    assert (tmp_path / "scores" / "mv_cnn_st_ti_dc.npz").is_file()
    # The same seed gives the same networks: every model is built after seeding (torch's
    # default seed differs per process and run, so weights made before it differed: the
    # README's demo table moved by up to 30 points between runs of one seed).
    again = tmp_path / "again"
    run(again, cfg)
    scores = sorted(p.name for p in (tmp_path / "scores").glob("*.npz"))
    assert scores == sorted(p.name for p in (again / "scores").glob("*.npz")) and len(scores) > 8
    for name in scores:
        a, b = np.load(tmp_path / "scores" / name), np.load(again / "scores" / name)
        assert np.array_equal(a["scores"], b["scores"]), name
