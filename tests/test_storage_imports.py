"""The storage package stays independent of discord, torch and the bot package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_storage_imports_neither_discord_nor_torch_nor_bot() -> None:
    code = (
        "import sys, storage, storage.buffer, storage.digests\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('discord', 'torch', 'transformers', 'bot', 'cogs'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
