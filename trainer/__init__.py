"""LoRA fine-tuning of the tmd modules (transformers + peft). Imports torch: keep it out of tmd_local."""

# tmd_local sets OMP_WAIT_POLICY=PASSIVE (sleeping OpenMP threads) before any OpenMP runtime loads;
# imported here, it comes before whichever trainer module first imports torch.
import tmd_local  # noqa: F401
