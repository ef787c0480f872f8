"""An adapter returned by the device in fp16 -> adapter_model.safetensors in fp32 (the values are the
fp16-rounded ones), and tmd.json's `training` notes where it was trained.
usage: restore.py <adapter folder> <device name>"""

import json
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

folder, device = Path(sys.argv[1]), sys.argv[2]
half = folder / "adapter_model.fp16.safetensors"
if half.is_file():
    save_file({k: v.float() for k, v in load_file(str(half)).items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    half.unlink()
meta_path = folder / "tmd.json"
meta = json.loads(meta_path.read_text())
meta["training"]["trained_on"] = f"{device or 'GPU'} (lent device), adapter returned in fp16"
meta_path.write_text(json.dumps(meta, indent=2) + "\n")
print(f"restored {folder}")
