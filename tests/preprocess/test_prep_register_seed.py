"""Registration is repeatable: the same seed gives the same affine (one ITK thread, as under --jobs).

antspyx 0.6 ignores a ``random_seed=`` keyword and ANTs reads seed 0 as "from the clock"; before the
fix two runs on one scan gave affines up to ~0.1 mm apart, which changed ~1,300 mask voxels per subject and
made `make demo` results differ from run to run. Runs in a subprocess because ITK reads its thread
count when it is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_SCRIPT = """
import json
import numpy as np
from mriad.atlas import load_template
from mriad.preprocess.register import register

brain = load_template("t1_brain")
moved = brain.affine.copy()
moved[:3, 3] += [4.0, -3.0, 2.0]
moved[:3, :3] = np.array([[0.98, -0.17, 0.0], [0.17, 0.98, 0.0], [0.0, 0.0, 1.0]]) @ moved[:3, :3]
runs = [register(brain.data, moved, brain.data, brain.affine, method="affine-fast", seed=seed).matrix.tolist()
        for seed in (0, 0, 5)]
print(json.dumps(runs))
"""


def test_same_seed_same_affine() -> None:
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True)
    first, again, other = json.loads(done.stdout.strip().splitlines()[-1])
    assert first == again
    assert first != other  # the seed reaches ANTs: another seed samples other points
