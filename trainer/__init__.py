"""LoRA fine-tuning of the tmd modules (transformers + peft). Imports torch: keep it out of tmd_local."""
