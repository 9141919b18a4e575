"""``python -m mriad.train.launch``: torchrun with a bounded wait for the other nodes and one-line failures.

It takes torchrun's own arguments (``--nnodes 2 --nproc-per-node 4 --rdzv-backend c10d
--rdzv-endpoint HOST:PORT -m mriad train ...``) and runs torchrun's launcher in this process, with two
differences. The rendezvous waits ``$MRIAD_DIST_TIMEOUT`` seconds (default 300) for the other nodes,
not torch's ten minutes, unless ``--rdzv-conf join_timeout=...`` says otherwise; the workers inherit
the same timeout for their own join and collectives (:func:`mriad.train.distributed.setup`). And a
node that never came, or a worker that failed, ends the launch with one line on stderr and exit code
1, not a page of tracebacks: what a Slurm log of a multi-node job should show.
"""

from __future__ import annotations

import logging
import os
import sys

from mriad.train.distributed import TIMEOUT_ENV, timeout_seconds


def _with_join_timeout(conf: str, seconds: float) -> str:
    if "join_timeout" in conf:
        return conf
    return ",".join(part for part in (conf, f"join_timeout={max(1, round(seconds))}") if part)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    from mriad.infra.errors import MriadError

    try:
        seconds = timeout_seconds()
    except MriadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args = parse_args(argv)
    args.rdzv_conf = _with_join_timeout(args.rdzv_conf or "", seconds)
    os.environ.setdefault(TIMEOUT_ENV, str(seconds))
    endpoint = args.rdzv_endpoint or f"{args.master_addr}:{args.master_port or 29500}"
    # torchrun logs each failure with a traceback before raising it; the one line below says it all.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except RendezvousError as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        print(
            f"error: launch: the rendezvous at {endpoint} for {args.nnodes} node(s) failed ({reason}); "
            f"start one launch on every node with the same --rdzv-endpoint, or raise {TIMEOUT_ENV} "
            f"(now {seconds:g} s)",
            file=sys.stderr,
        )
        return 1
    except ChildFailedError as exc:
        codes = sorted({failure.exitcode for failure in exc.failures.values()})
        print(
            f"error: launch: {len(exc.failures)} worker process(es) failed (exit code {', '.join(map(str, codes))}); "
            "their own error lines are above",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
