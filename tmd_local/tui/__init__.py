"""The Textual app (`tmd app`): ask a question, watch each module load, stream and unload.

Importing this package does not import Textual; `tmd_local.tui.app` does.
"""
