"""Every comparison table names each run's optimisation budget (issue 21.2)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mriad.compare.collect import RunEval
from mriad.compare.tables import Group, run_budget, table_one


def _run(tmp_path: Path, name: str, config: dict, metrics: str | None) -> RunEval:
    root = tmp_path / name
    root.mkdir()
    if metrics is not None:
        (root / "metrics.csv").write_text(metrics)
    return RunEval(path=root, config=config, per_subject=pd.DataFrame())


def test_budget_reads_steps_batch_and_the_evaluated_step(tmp_path: Path) -> None:
    metrics = "epoch,step,train_loss,val_loss,seconds\n0,0,,0.9,0\n25,25,0.5,0.4,1\n50,50,0.4,0.45,2\n75,75,0.3,0.4,3\n"
    trained = _run(tmp_path, "a", {"model": "pddpm", "options": {"batch_size": 32}}, metrics)
    assert run_budget(trained) == "75 x 32 (best: step 25)"  # ties keep the first, as train does
    no_val = _run(
        tmp_path,
        "b",
        {"model": "ae", "options": {"batch_size": 8}},
        "epoch,step,train_loss,val_loss,seconds\n3,30,0.1,,1\n",
    )
    assert run_budget(no_val) == "30 x 8 (last)"
    view = _run(tmp_path, "c", {"model": "ae", "options": {"batch_size": 8}, "checkpoint": "step-20"}, None)
    assert run_budget(view) == "20 x 8 (step-20 checkpoint)"
    untrained = _run(tmp_path, "d", {"model": "thresh", "options": {}}, None)
    assert run_budget(untrained) == "-"
    assert Group("pddpm", "pddpm", [trained, trained]).budget_text() == "75 x 32 (best: step 25)"


def test_table_one_has_a_budget_column() -> None:
    row = {"group": "ae", "metric": "dice", "folds": "0", "budget": "300 x 32 (best: step 300)", "mean": 0.5,
           "std": float("nan"), "is_baseline": True}  # fmt: skip
    header, body = table_one([row], ["ae"], ["dice"])
    assert header[:3] == ["Model", "Folds", "Budget (steps x batch)"]
    assert body[0][2] == "300 x 32 (best: step 300)"
