"""tmd: three-module distillation, run locally with llama.cpp.

This package imports without torch: it holds the prompts, datasets, runtime, pipeline and CLI.
"""

__version__ = "0.1.0"
