"""Two gloo processes on the CPU train one model data-parallel: same weights, one set of files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from tinydata import TINY_PDDPM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, manifest: str, out: str, dump: str) -> None:
    # What torchrun would set for each process.
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    from mriad.infra.console import settings
    from mriad.train import fit

    settings.quiet = True
    result = fit(
        "pddpm",
        data=Path(manifest),
        out=Path(out),
        options={**TINY_PDDPM, "epochs": 2, "val_every": 1},
        device="cpu",
        seed=5,
    )
    torch.save(
        {"state_dict": result.model.state_dict(), "step": result.step, "best_val": result.best_val},
        Path(dump) / f"rank{rank}.pt",
    )


def test_two_gloo_ranks_agree_and_only_rank0_writes(tiny_manifest: Path, tmp_path: Path) -> None:
    out, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_manifest), str(out), str(dump)), nprocs=2, join=True)

    states = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in states[0]["state_dict"].items():
        assert torch.equal(value, states[1]["state_dict"][key]), key
    # 9 training volumes, batch 4 x 2 ranks -> 2 steps per epoch.
    assert states[0]["step"] == states[1]["step"] == 4
    assert states[0]["best_val"] == states[1]["best_val"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "metrics.csv"]
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert saved["world_size"] == 2 and len(saved["rng"]["rank_generators"]) == 2
    for key, value in states[0]["state_dict"].items():
        assert torch.equal(value, saved["state_dict"][key]), key
