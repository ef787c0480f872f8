"""`tmd app` on the command line: bad input is one line and exit 1; Textual loads only when the app runs."""

import subprocess
import sys

from click.testing import CliRunner

from tmd_local.cli import cli


def test_app_is_registered_and_textual_is_imported_lazily():
    code = ("import sys; from tmd_local.cli import cli; "
            "assert 'app' in cli.commands, cli.commands; "
            "assert not any(m == 'textual' or m.startswith('textual.') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_options_are_one_line_errors(tmp_path, embedded_model):
    runner = CliRunner()
    cases = [(["--bundle", str(tmp_path)], "no bundle manifest here"),
             (["--quant", "q9_9"], "--quant q9_9: model smollm2-135m-instruct offers q4_1"),
             (["--max-memory", "600"], "add a unit"),
             (["--bundle", str(tmp_path), "--model", "x"], "give --bundle or --model, not both")]
    for args, message in cases:
        result = runner.invoke(cli, ["app", *args])
        assert result.exit_code in (1, 2) and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
