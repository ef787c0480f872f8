"""Evaluation and reporting: `tmd eval` over benchmark splits, result rows, tables, plots, the
report document, and the quantization mix a memory budget picks from measured results."""
