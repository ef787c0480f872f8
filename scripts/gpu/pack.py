"""One finished adapter folder -> one tar, its LoRA tensors in fp16 (the device returns files of at
most 16 MiB; fp32 r16 adapters of the 135M student are 19.5 MB). scripts/gpu/unpack.sh restores fp32.
usage: pack.py <adapter folder> <out.tar>"""

import sys
import tarfile
from pathlib import Path

from safetensors.torch import load_file, save_file

folder, target = Path(sys.argv[1]), Path(sys.argv[2])
if not (folder / "tmd.json").is_file():
    print(f"pack: {folder} did not finish (no tmd.json); not packed", flush=True)
    sys.exit(0)
weights = folder / "adapter_model.safetensors"
half = {k: v.half() for k, v in load_file(str(weights)).items()}
save_file(half, str(folder / "adapter_model.fp16.safetensors"), metadata={"format": "pt"})
with tarfile.open(target, "w") as tar:
    for path in sorted(folder.iterdir()):
        if path.name in ("checkpoints", weights.name) or path.name.startswith("."):
            continue
        tar.add(path, arcname=f"{folder.name}/{path.name}")
print(f"pack: {target.name} {target.stat().st_size / 2**20:.1f} MiB", flush=True)
