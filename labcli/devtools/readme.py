"""README's table of verbs and recipes is `lab ls --markdown`: rewrite the block between its markers.

    python -m labcli.devtools.readme     # after adding or renaming a recipe (tests/test_cli.py checks it)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"(<!-- lab ls --markdown -->\n).*?(<!-- end lab ls -->)", re.S)


def main() -> None:
    table = subprocess.run([sys.executable, "-m", "labcli", "ls", "--markdown"], capture_output=True, text=True,
                           check=True).stdout
    text = README.read_text(encoding="utf-8")
    README.write_text(BLOCK.sub(lambda m: m.group(1) + table + m.group(2), text), encoding="utf-8")
    print(f"rewrote the recipe table in {README}")


if __name__ == "__main__":
    main()
