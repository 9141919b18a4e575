"""`mriad compare` and `mriad report` on fabricated run folders: outputs, groups and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from compare_runs import make_run, standard_runs

from mriad.compare.run import compare
from mriad.infra.errors import MriadError

RESAMPLES = "500"  # enough for p < 0.05 with 12 subjects, fast on two cores


def test_cli_compare_writes_tables_figures_and_json(cli, tmp_path: Path) -> None:
    runs, subjects, _ = standard_runs(tmp_path)
    out = tmp_path / "cmp"
    result = cli("--json", "compare", *runs, "--split", "brats-test", "--out", out, "--resamples", RESAMPLES)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in --json output"))
    assert summary["baseline"] == "ddpm" and summary["metrics"] == ["dice", "auprc", "auroc"]
    assert [g["name"] for g in summary["groups"]] == ["ddpm", "pddpm"]
    assert [g["folds"] for g in summary["groups"]] == [[0, 1], [0, 1]]
    assert "--baseline defaults to ddpm" in result.stderr
    table = pd.read_csv(out / "compare.csv")
    pddpm_dice = table[(table.group == "pddpm") & (table.metric == "dice")].iloc[0]
    assert pddpm_dice.p_holm < 0.05 and pddpm_dice.diff_mean > 0.1
    assert pddpm_dice.ci_low < pddpm_dice.subject_mean < pddpm_dice.ci_high
    assert pddpm_dice.n_runs == 2 and pddpm_dice.n_subjects == len(subjects)
    markdown = (out / "compare.md").read_text()
    assert "| Model | Folds | Budget (steps x batch) | Dice [%] |" in markdown and "**" in markdown and "†" in markdown
    assert (out / "per_subject.csv").is_file()
    for name in ("box_dice.png", "box_auprc.png", "recon_BraTS_001.png"):  # BraTS_001: larger lesion of the two
        assert (out / "figures" / name).read_bytes().startswith(b"\x89PNG")


def test_cli_compare_terminal_table_and_default_out(cli, tmp_path: Path, _isolated_workspace: Path) -> None:
    runs, _, _ = standard_runs(tmp_path, recon=0)
    result = cli(
        "compare",
        str(tmp_path / "runs" / "*"),
        "--split",
        "brats-test",
        "--metric",
        "dice",
        "--baseline",
        runs[2],
        "--resamples",
        RESAMPLES,
        "--no-figures",
    )
    assert result.exit_code == 0, result.output
    assert "pddpm (baseline)" in result.output and "Dice [%]" in result.output
    out = _isolated_workspace / "compare-brats-test"
    assert (out / "compare.csv").is_file() and not (out / "figures").exists()


def test_same_model_same_fold_become_variants(tmp_path: Path) -> None:
    subjects = [f"S{i}" for i in range(6)]
    dice = np.linspace(0.2, 0.6, 6)
    for patch in (48, 60):
        for fold in (0, 1):
            make_run(
                tmp_path,
                f"pddpm-p{patch}-fold{fold}",
                "pddpm",
                fold,
                dice + patch / 1000,
                subjects=subjects,
                options={"lr": 1e-4, "patch_size": patch, "seed": fold},
            )
    make_run(tmp_path, "ae-run", "ae", 0, dice, subjects=subjects, label="AE (paper)")
    summary = compare([tmp_path], "brats-test", out=tmp_path / "out", resamples=100, figures=False)
    names = [g["name"] for g in summary["groups"]]
    assert names == ["AE (paper)", "pddpm (patch_size=48)", "pddpm (patch_size=60)"]
    assert summary["baseline"] == "AE (paper)"  # the first run found in the folder (sorted)


def test_mismatched_subjects_are_refused(tmp_path: Path) -> None:
    make_run(tmp_path, "a", "ddpm", 0, [0.1, 0.2, 0.3], subjects=["s1", "s2", "s3"])
    make_run(tmp_path, "b", "pddpm", 0, [0.1, 0.2, 0.3], subjects=["s1", "s2", "s4"])
    with pytest.raises(MriadError, match=r"different subjects of brats-test .*only in a \(e.g. s3\).*s4"):
        compare([tmp_path / "a", tmp_path / "b"], "brats-test", out=tmp_path / "o", resamples=10)


def test_missing_evaluation_is_refused_with_the_command_to_run(cli, tmp_path: Path) -> None:
    make_run(tmp_path, "a", "ddpm", 0, [0.1, 0.2], subjects=["s1", "s2"])
    make_run(tmp_path, "b", "pddpm", 0, [0.1, 0.2], subjects=["s1", "s2"], evaluated=False)
    result = cli("compare", tmp_path / "a", tmp_path / "b", "--split", "brats-test")
    assert result.exit_code == 1
    message = result.stderr
    assert f"mriad evaluate --run {tmp_path / 'b'} --split brats-test" in message
    assert len(message.strip().splitlines()) == 1 or "error:" in message


def test_other_split_in_summary_is_refused(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", "ddpm", 0, [0.1, 0.2], subjects=["s1", "s2"])
    make_run(tmp_path, "b", "pddpm", 0, [0.1, 0.2], subjects=["s1", "s2"])
    summary_path = a / "eval" / "brats-test" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["split"] = "mslub-test"
    summary_path.write_text(json.dumps(summary))
    with pytest.raises(MriadError, match="records split 'mslub-test'"):
        compare([tmp_path / "a", tmp_path / "b"], "brats-test", out=tmp_path / "o", resamples=10)


def test_single_model_is_refused(cli, tmp_path: Path) -> None:
    make_run(tmp_path, "p0", "pddpm", 0, [0.1, 0.2], subjects=["s1", "s2"])
    make_run(tmp_path, "p1", "pddpm", 1, [0.1, 0.2], subjects=["s1", "s2"])
    result = cli("compare", tmp_path / "p0", tmp_path / "p1", "--split", "brats-test")
    assert result.exit_code == 1 and "only one model (pddpm, 2 run(s))" in result.stderr


def test_other_refusals(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", "ddpm", 0, [0.1, 0.2], subjects=["s1", "s2"])
    b = make_run(tmp_path, "b", "pddpm", 0, [0.3, 0.4], subjects=["s1", "s2"])
    with pytest.raises(MriadError, match="inside the run folder"):
        compare([a, b], "brats-test", out=a / "cmp", resamples=10)
    with pytest.raises(MriadError, match="no metric 'hd95'"):
        compare([a, b], "brats-test", metrics=["hd95"], out=tmp_path / "o", resamples=10)
    with pytest.raises(MriadError, match="metric l1 has no values"):
        compare([a, b], "brats-test", metrics=["l1"], out=tmp_path / "o", resamples=10)
    with pytest.raises(MriadError, match="no run folder .* matches"):
        compare([str(tmp_path / "nothing*")], "brats-test", out=tmp_path / "o", resamples=10)


def test_cli_report_is_self_contained(cli, tmp_path: Path) -> None:
    runs, _, _ = standard_runs(tmp_path, n=6, recon=0)
    figures = runs[0] / "eval" / "brats-test" / "figures"
    figures.mkdir()
    (figures / "example.png").write_bytes(_tiny_png())
    result = cli("report", runs[0])
    assert result.exit_code == 0, result.output
    page = (runs[0] / "report.html").read_text()
    assert str(runs[0] / "report.html") in result.output
    assert page.count('<img src="data:image/png;base64,') >= 3  # curve, Dice histogram, example.png
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "brats-test" in page and "training curve" in page
    unevaluated = make_run(tmp_path, "fresh", "ae", 0, [0.1], subjects=["s1"], evaluated=False)
    out = tmp_path / "pages" / "fresh.html"
    assert cli("report", unevaluated, "--out", out).exit_code == 0
    assert "not evaluated yet" in out.read_text()


def test_report_refuses_a_folder_that_is_not_a_run(cli, tmp_path: Path) -> None:
    result = cli("report", tmp_path)
    assert result.exit_code == 1 and "not a run folder" in result.stderr


def _tiny_png() -> bytes:
    from mriad.compare.figures import new_figure, png_bytes

    figure = new_figure(1, 1)
    figure.add_subplot().plot([0, 1], [0, 1])
    return png_bytes(figure)


def test_baseline_outside_the_run_list_is_added_first(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", "ddpm", 0, [0.1, 0.2, 0.3], subjects=["s1", "s2", "s3"])
    b = make_run(tmp_path, "b", "pddpm", 0, [0.3, 0.4, 0.5], subjects=["s1", "s2", "s3"])
    summary = compare([b], "brats-test", baseline=a, out=tmp_path / "o", resamples=50, figures=False)
    assert summary["baseline"] == "ddpm" and [g["name"] for g in summary["groups"]] == ["ddpm", "pddpm"]
    pddpm = next(r for r in summary["rows"] if r["group"] == "pddpm" and r["metric"] == "dice")
    assert pddpm["diff_mean"] == pytest.approx(0.2) and pddpm["p_value"] == pytest.approx(0.25)  # exact: 2/8
