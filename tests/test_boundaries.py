"""The house's boundaries, read from the source: what each package may import.

- ``storage/`` knows nothing of discord, torch, transformers, the engine, the bot or the cogs;
- ``engine/`` knows nothing of discord, the bot, the cogs or storage;
- ``cogs/`` never touch torch, transformers or peft (the model lives behind the engine's executor);
- ``core/`` (the Discord application's core: reading, the summary flow, visibility, rendering...) imports
  neither the cogs nor the bot package; cogs and the client use it (it reads the bot through ``core.app.App``);
- nothing imports a cog module (cogs are loaded by name as extensions; shared code lives in ``core``);
- ``tuning/`` (fine-tuning and scoring) knows nothing of discord, the cogs, the core or storage;
- the project's modules import each other without a circle, TYPE_CHECKING imports included;
- no command-line entry point imports another: what they share is in ``bot/cli_common.py``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

FORBIDDEN = {
    "storage": {"discord", "torch", "transformers", "peft", "engine", "bot", "cogs"},
    "engine": {"discord", "bot", "cogs", "storage"},
    "cogs": {"torch", "transformers", "peft"},
    "core": {"torch", "transformers", "peft", "cogs", "bot"},
    "tuning": {"discord", "cogs", "core", "storage"},
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


def test_no_cli_imports_another_cli() -> None:
    clis = {f"bot.{p.stem}" for p in (ROOT / "bot").glob("cli_*.py")} - {"bot.cli_common"}
    assert {"bot.cli_eval", "bot.cli_finetune", "bot.cli_summarize"} <= clis
    broken = [f"{path.relative_to(ROOT)} imports {module}" for path in python_files("bot")
              for module in imported_modules(path) if module in clis and f"bot.{path.stem}" in clis]
    assert not broken, "\n".join(broken)


def test_nothing_imports_a_cog_module() -> None:
    cogs = {p.stem for p in (ROOT / "cogs").glob("*.py") if p.stem != "__init__"}
    cogs |= {p.parent.name for p in (ROOT / "cogs").glob("*/__init__.py")}  # a cog that is a package
    assert "digests" in cogs
    broken = []
    for package in ("bot", "core", "engine", "cogs", "storage", "bench"):  # tests may test a cog directly
        for path in python_files(package):
            own = path.relative_to(ROOT).parts[:2] if path.parent.parent.name == "cogs" else None
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "cogs" and len(parts) > 1 and parts[1] in cogs and tuple(parts[:2]) != own:
                    broken.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not broken, "\n".join(broken)


PACKAGES = ("bot", "core", "cogs", "engine", "storage", "tuning")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a ``from x import y`` of a module ``x.y`` counts as x.y)."""
    files = {module_name(p): p for package in PACKAGES for p in python_files(package)}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        wanted = {m for m in imported_modules(path) if m in files and m != name}
        graph[name] = {m for m in wanted if not (files[m].name == "__init__.py" and any(w.startswith(m + ".") for w in wanted))}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_checker_sees_relative_and_absolute_imports(tmp_path: Path) -> None:
    """The rule above is only as good as the import reader: it must catch both spellings."""
    sample = ROOT / "engine" / "summarizer.py"
    seen = imported_modules(sample)
    assert "engine.transcript" in seen and "engine.prompts.summary_prompt" in seen
    assert any(m.startswith("core") for m in imported_modules(ROOT / "cogs" / "summarize.py"))


def bot_attribute_writes(source: str) -> list[str]:
    """Every ``bot.x = ...`` / ``self.bot.x = ...`` / ``setattr(bot, ...)`` in ``source``, as text."""
    found = []

    def is_bot(node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id == "bot") or (
            isinstance(node, ast.Attribute) and node.attr == "bot" and isinstance(node.value, ast.Name) and node.value.id == "self"
        )

    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and node.args:
            if is_bot(node.args[0]):
                found.append(ast.unparse(node))
        for target in targets:
            if isinstance(target, ast.Attribute) and is_bot(target.value):
                found.append(ast.unparse(target))
    return found


def test_no_cog_sets_attributes_on_the_bot() -> None:
    """Cogs lend each other parts through ``bot.services`` (typed), never by setting names on the bot."""
    broken = [f"{path.relative_to(ROOT)}: {write}" for path in python_files("cogs")
              for write in bot_attribute_writes(path.read_text(encoding="utf-8"))]
    assert not broken, "\n".join(broken)


def test_the_attribute_checker_sees_every_spelling() -> None:
    sample = "self.bot.buffer = b\nbot.factory = f\nbot.count += 1\nsetattr(self.bot, 'x', 1)\nself.buffer = b\n"
    assert bot_attribute_writes(sample) == ["self.bot.buffer", "bot.factory", "bot.count", "setattr(self.bot, 'x', 1)"]


def test_no_pings_is_built_in_one_place() -> None:
    """Every send uses ``NO_PINGS``; a second ``AllowedMentions`` could drift. The rule, not a line number:
    one module names ``AllowedMentions``, it builds it once, and what it builds pings nobody."""
    builders = {path.relative_to(ROOT).as_posix(): uses for package in ("bot", "core", "cogs", "engine", "storage")
                for path in python_files(package) if (uses := allowed_mentions_uses(path))}
    assert len(builders) == 1 and list(builders.values()) == [1], builders
    (module_path,) = builders
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    pings = module.NO_PINGS
    assert (pings.everyone, pings.users, pings.roles, pings.replied_user) == (False, False, False, False)


def allowed_mentions_uses(path: Path) -> int:
    """How many times ``path``'s code names ``AllowedMentions`` (comments and docstrings aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sum(1 for node in ast.walk(tree)
               if (isinstance(node, ast.Attribute) and node.attr == "AllowedMentions")
               or (isinstance(node, ast.Name) and node.id == "AllowedMentions")
               or (isinstance(node, ast.alias) and node.name.split(".")[-1] == "AllowedMentions"))
