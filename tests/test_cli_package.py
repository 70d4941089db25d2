"""The CLI package's structure: an acyclic import graph, imports at module top only, no private
names across modules, no harness import of model packages; plugin commands join the parser."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from mer_bench import commands
from mer_bench.cli import build_parser, main
from mer_bench.errors import ConfigError
from tests.conftest import ROOT

PACKAGE = ROOT / "mer_bench"
CLI_FILES = sorted((PACKAGE / "cli").glob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    return [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]


def _edges(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports when it is imported (module-level only)."""
    out: set[str] = set()
    for node in _top_level_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            # ``from pkg import sub`` imports the submodule pkg.sub
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        out.update(t for t in targets if t in MODULES and t != name)
    return out


def test_package_import_graph_has_no_cycle() -> None:
    graph = {name: _edges(name, path) for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # the graph is not vacuous: the CLI modules do import the harness
    assert {"mer_bench.runner", "mer_bench.cli._common"} <= graph["mer_bench.cli.run"]


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_cli_modules_import_at_top_without_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    top = set(map(id, _top_level_imports(tree)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            assert id(node) in top, f"{path.name}:{node.lineno}: import inside a function"
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith("cider"), f"{path.name} imports {node.module}"
            private = [a.name for a in node.names if a.name[:1] == "_" and a.name[:2] != "__"]
            assert not private, f"{path.name}:{node.lineno}: private names {private}"
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("cider") for a in node.names), path.name


def test_build_parser_assembles_group_modules() -> None:
    source = (PACKAGE / "cli" / "app.py").read_text()
    fn = next(
        n
        for n in ast.parse(source).body
        if isinstance(n, ast.FunctionDef) and n.name == "build_parser"
    )
    assert fn.end_lineno - fn.lineno < 20


def test_cider_registers_import_checkpoint_as_a_plugin_command() -> None:
    assert commands.BUILTIN_COMMANDS["import-checkpoint"].startswith("cider.")
    names = [c.name for c in commands.plugin_commands()]
    assert "import-checkpoint" in names


def test_a_registered_command_runs_with_the_shared_error_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "_REGISTERED", {})

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fail", action="store_true")

    def handler(args: argparse.Namespace) -> int:
        if args.fail:
            raise ConfigError("told to fail")
        print("hello from a plugin")
        return 0

    commands.register_command(commands.Command("hello", "say hello", add, handler))
    assert "hello" in build_parser().format_help()
    assert main(["hello"]) == 0
    assert capsys.readouterr().out == "hello from a plugin\n"
    assert main(["hello", "--fail"]) == 2
    assert capsys.readouterr().err == "error: told to fail\n"


def test_a_broken_plugin_target_is_left_out_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(commands.BUILTIN_COMMANDS, "broken", "no_such_module:COMMAND")
    names = [c.name for c in commands.plugin_commands()]
    assert "broken" not in names and "import-checkpoint" in names
    assert "warning: command 'broken' left out" in capsys.readouterr().err
