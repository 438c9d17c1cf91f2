"""The house's boundaries, read from the source: what each package may import.

- ``storage/`` knows nothing of discord, torch, transformers, the engine, the bot or the cogs;
- ``engine/`` knows nothing of discord, the bot, the cogs or storage;
- ``cogs/`` never touch torch, transformers or peft (the model lives behind the engine's executor);
- nothing imports a cog module (cogs are loaded by name as extensions; shared code lives in ``cogs/utils``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

FORBIDDEN = {
    "storage": {"discord", "torch", "transformers", "peft", "engine", "bot", "cogs"},
    "engine": {"discord", "bot", "cogs", "storage"},
    "cogs": {"torch", "transformers", "peft"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute dotted names of every module ``path`` imports, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_its_boundary(package: str) -> None:
    broken = []
    for path in python_files(package):
        for module in imported_modules(path):
            if module.split(".")[0] in FORBIDDEN[package]:
                broken.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not broken, "\n".join(broken)


def test_nothing_imports_a_cog_module() -> None:
    cogs = {p.stem for p in (ROOT / "cogs").glob("*.py") if p.stem != "__init__"}
    broken = []
    for package in ("bot", "engine", "cogs", "storage", "bench"):  # tests may test a cog directly
        for path in python_files(package):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "cogs" and len(parts) > 1 and parts[1] in cogs:
                    broken.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not broken, "\n".join(broken)


def test_the_checker_sees_relative_and_absolute_imports(tmp_path: Path) -> None:
    """The rule above is only as good as the import reader: it must catch both spellings."""
    sample = ROOT / "engine" / "summarizer.py"
    seen = imported_modules(sample)
    assert "engine.transcript" in seen and "engine.prompts.summary_prompt" in seen
    assert any(m.startswith("cogs.utils") for m in imported_modules(ROOT / "cogs" / "summarize.py"))
