"""bench/learning_curves.py reads step-K checkpoint views and best.pt evaluations (issue 21.3)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

BENCH = Path(__file__).resolve().parents[2] / "bench" / "learning_curves.py"


def _module():  # bench/ is not a package: load the script by path
    spec = importlib.util.spec_from_file_location("learning_curves", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eval(folder: Path, dice: float) -> None:
    target = folder / "eval" / "brats-test"
    target.mkdir(parents=True)
    frame = pd.DataFrame(
        {"subject_id": ["a", "b"], "dice": [dice, dice + 0.2], "auprc": [0.1, 0.3], "auroc": [0.6, 0.8]}
    )
    frame.to_csv(target / "per_subject.csv", index=False)


def test_curves_table_and_figure(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for model, best_row in (("pddpm", "40,40,0.2,0.3,1"), ("ae", "80,80,0.2,0.1,2")):
        root = runs / model
        root.mkdir(parents=True)
        (root / "config.json").write_text(json.dumps({"model": model, "options": {"batch_size": 32}}))
        (root / "metrics.csv").write_text(
            f"epoch,step,train_loss,val_loss,seconds\n0,0,,0.9,0\n{best_row}\n80,80,0.2,0.35,2\n"
        )
        _eval(root, 0.5)
        for step, dice in ((40, 0.1), (80, 0.3)):
            _eval(root / "checkpoint-views" / f"step-{step}", dice)
    (runs / "not-a-run").mkdir()
    module = _module()
    table = module.collect(runs, "brats-test")
    assert sorted(zip(table["run"], table["step"], table["best"])) == [
        ("ae", 40, False), ("ae", 80, False), ("ae", 80, True),
        ("pddpm", 40, False), ("pddpm", 40, True), ("pddpm", 80, False),
    ]  # fmt: skip
    pddpm_40 = table[(table.run == "pddpm") & (table.step == 40) & ~table.best].iloc[0]
    assert abs(pddpm_40.dice - 20.0) < 1e-9 and abs(pddpm_40.auroc - 70.0) < 1e-9
    out = tmp_path / "curves.png"
    assert module.main([str(runs), "--split", "brats-test", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert "| pddpm | 40 | best.pt | 60.00 |" in module.markdown(table)
