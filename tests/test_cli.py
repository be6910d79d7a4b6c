import subprocess
import sys


def test_cli_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "safepredict", "--help"], capture_output=True, text=True, check=True
    )
    assert "safepredict" in out.stdout
