"""Helpers shared by the CLI tests: the installed ``healthmon`` console script."""

import shutil
import sys
from pathlib import Path


def healthmon_script() -> str:
    # healthmon_dagster.cli.main has no `if __name__ == "__main__"` block, so `python -m` cannot
    # run it; the console script installed beside this interpreter is what users run anyway.
    script = shutil.which("healthmon", path=str(Path(sys.executable).parent)) or shutil.which(
        "healthmon"
    )
    assert script is not None, "the healthmon console script is not installed (pip install -e .)"
    return script
