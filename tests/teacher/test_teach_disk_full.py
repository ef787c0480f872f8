"""Issue #27: `tmd teach` on a full disk (a file-size limit) stops with one line; once space is
back the same command finishes, every question exactly once."""

from __future__ import annotations

from disk_full_helpers import assert_one_line_disk_error, run_with_file_limit, tmd_command
from teacher_helpers import all_records, ids_once


def test_teach_on_a_full_disk_stops_with_one_line_and_the_rerun_completes(data_dir, tmp_path):
    out = tmp_path / "gold"
    cmd = tmd_command("teach", "--dataset", "strategyqa", "--limit", "20", "--teacher", "gold", "--out", out,
                      "--data-dir", data_dir)
    full = run_with_file_limit(cmd, 4096)
    line = assert_one_line_disk_error(full)
    assert str(out) in line  # names the file it could not write
    for path in out.glob("*.jsonl"):  # nothing half-written is left where a finished file would be
        assert path.stat().st_size <= 4096
    again = run_with_file_limit(cmd, None)
    assert again.returncode == 0, again.stderr[-2000:]
    files = all_records(out)
    for module in ("analyzer", "drd"):
        assert len(ids_once(files, module)) == 20
