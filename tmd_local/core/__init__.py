"""The contracts every stage shares: paths, file formats and records, roles and prompts, datasets,
GGUF and bundle file readers, memory figures. Imports nothing of tmd above it."""
