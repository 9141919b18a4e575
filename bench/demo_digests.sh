#!/bin/bash
# Digests of a `python -m mriad.demo --quick` output folder (issue 16: behaviour unchanged by the refactor).
# Tensors of checkpoints, voxel data of NIfTI files, per_subject.csv bytes, numbers of summary.json.
# Usage: bash bench/demo_digests.sh OUT > digests.txt
out=$1

"${PYTHON:-.venv/bin/python}" - "$out" <<'PY'
import sys, hashlib, json, pathlib, torch, nibabel as nib, numpy as np
root = pathlib.Path(sys.argv[1])
for p in sorted(root.rglob("*")):
    if not p.is_file(): continue
    rel = p.relative_to(root)
    if p.suffix == ".pt":
        ck = torch.load(p, weights_only=True, map_location="cpu")
        sd = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
        h = hashlib.sha256()
        def walk(o, pre=""):
            if isinstance(o, torch.Tensor): h.update(pre.encode()); h.update(o.detach().contiguous().numpy().tobytes())
            elif isinstance(o, dict):
                for k in sorted(o, key=str): walk(o[k], pre+"/"+str(k))
        walk(sd)
        print(rel, "tensors", h.hexdigest()[:16])
    elif p.name.endswith(".nii.gz"):
        print(rel, "nii", hashlib.sha256(np.asarray(nib.load(p).dataobj).tobytes()).hexdigest()[:16])
    elif p.name in ("per_subject.csv",):
        print(rel, "csv", hashlib.sha256(p.read_bytes()).hexdigest()[:16])
    elif p.name == "summary.json":
        d = json.loads(p.read_text())
        def nums(o, pre=""):
            if isinstance(o, dict):
                for k in sorted(o): yield from nums(o[k], pre+"."+k)
            elif isinstance(o, list):
                for i, v in enumerate(o): yield from nums(v, pre+f"[{i}]")
            elif isinstance(o, (int, float)) and not isinstance(o, bool): yield pre, o
        print(rel, "summary", {k: v for k, v in nums(d)})
PY
