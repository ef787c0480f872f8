"""The llama.cpp runtime: modules loaded and unloaded within a memory budget (pool, runner), the
three-stage pipeline, bundles and the shipped students. Imports only tmd_local.core."""
