"""`make demo`'s driver in its quick form: every stage runs as a real `mriad` subprocess."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def test_quick_demo_runs_the_whole_chain(tmp_path: Path) -> None:
    from mriad.demo import QUICK, run_demo

    run_demo(tmp_path, QUICK)
    table = pd.read_csv(tmp_path / "compare" / "compare.csv")
    assert {"pddpm", "ae", "thresh"} <= set(table["model"])
    for model in ("pddpm", "ae", "thresh"):
        assert (tmp_path / "runs" / model / "eval" / "brats-test" / "summary.json").is_file()
    html = (tmp_path / "runs" / "pddpm" / "report.html").read_text()
    assert "data:image/png;base64," in html
