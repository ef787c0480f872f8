"""tmd: three-module distillation, run locally with llama.cpp.

This package imports without torch: it holds the prompts, datasets, runtime, pipeline and CLI.
"""

import os

# llama.cpp's (and torch's) OpenMP threads busy-wait between jobs by default: on a 2-core machine
# shared with another evaluation that doubled wall time and CPU for the same tokens. Sleep instead.
# It must be set before the OpenMP runtime loads, i.e. before llama_cpp is imported, and everything
# that runs llama.cpp (CLI, app, teacher, exporter, trainer) imports this package first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
