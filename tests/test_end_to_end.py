"""The whole chain learns something: `make demo` at full size, then its numbers are checked.

synth (raw IXI-like heads and BraTS-like tumours) -> preprocess -> split -> train a tiny pDDPM on the
CPU -> reconstruct + evaluate, next to the Thresh baseline (the preprocessed intensity itself, with
the same post-processing and threshold search) on the same subjects. If the network learned
nothing, its residual is no better than the raw intensity and the Dice assertion fails; a network
after one training step scored AUROC 0.41 on `mriad synth --preprocessed` data, so the AUROC
assertion is no formality either.

Marked slow (``make test-slow``): about 7 minutes on 2 idle CPU cores (see bench/RESULTS.md, Demo).
It also checks the demo's promise that it ends with the comparison table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


def _metrics(workspace: Path, model: str) -> dict[str, float]:
    summary = json.loads((workspace / "runs" / model / "eval" / "brats-test" / "summary.json").read_text())
    return {name: values["mean"] for name, values in summary["metrics"].items()}


@pytest.mark.slow
def test_full_demo_pddpm_beats_intensity_thresholding(tmp_path: Path) -> None:
    from mriad.demo import FULL, run_demo

    workspace = tmp_path / "demo"
    run_demo(workspace, FULL, seed=0)

    pddpm, thresh = _metrics(workspace, "pddpm"), _metrics(workspace, "thresh")
    (tmp_path / "result.json").write_text(json.dumps({"pddpm": pddpm, "thresh": thresh}))
    assert pddpm["auroc"] > 0.8, (pddpm, thresh)
    assert pddpm["dice"] > thresh["dice"], (pddpm, thresh)

    table = pd.read_csv(workspace / "compare" / "compare.csv")
    assert {"pddpm", "ae", "thresh"} <= set(table["model"])
