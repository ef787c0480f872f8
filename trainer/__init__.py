"""LoRA fine-tuning of the tmd modules (transformers + peft). Imports torch: keep it out of tmd_local."""

import os

# OpenMP threads that spin while waiting make a busy 2-core machine crawl (measured: a forward
# pass 6x slower when other processes share the cores). Sleep instead. This must be set before
# torch loads its OpenMP runtime; set here, any trainer module may be the first to import torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
