"""The README's first example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_first_agent_example_runs(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    code = re.search(r"## A first agent\n\n```python\n(.*?)```", text, re.S)
    assert code is not None, "the README lost its first example"
    script = tmp_path / "first_agent.py"
    script.write_text(code.group(1), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
