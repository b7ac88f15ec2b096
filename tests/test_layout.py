"""The layout's rules (DESIGN.md, "Layout"), checked on the source with ``ast``.

Every import counts, including those inside functions (a lazy import is still a
dependency). A failure names the file, the line and the import that breaks the rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it is installed as (pyproject's package-dir)
PACKAGES = {"voxloop": "voxloop", "codecs": "voxloop.codecs", "distill": "voxloop.distill",
            "realtime": "voxloop.realtime", "client": "voxloop.client", "bench": "voxloop.bench",
            "scripts": "scripts", "tests": "tests"}
SOURCE_FOLDERS = ("voxloop", "codecs", "distill", "realtime", "client", "bench", "scripts")
MAX_SOURCE_LINES = 400
# voxloop/'s modules that any room may use; voxloop.cli is the entry point, not shared
NOT_SHARED = {"voxloop.cli", "voxloop.__main__"}

CLIENT, WIRE, REALTIME = "voxloop.client", "voxloop.realtime.wire", "voxloop.realtime"
CODECS, BENCH = "voxloop.codecs", "voxloop.bench"
TEACHERS, DATA = "voxloop.distill.teachers", "voxloop.distill.data"
STUDENT, EVALS = "voxloop.distill.student", "voxloop.distill.evals"


@dataclass(frozen=True)
class Import:
    path: Path  # relative to ROOT
    line: int
    target: str  # absolute name of the module imported
    in_function: bool

    def __str__(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        return f"{self.path}:{self.line}: imports {self.target}{where}"


def module_name(path: Path) -> str:
    """``realtime/wire/items.py`` -> ``voxloop.realtime.wire.items``."""
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join([PACKAGES[folder], *rest])
    return name.removesuffix(".__init__")


def python_files(folders: tuple[str, ...]) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py")
                  if "__pycache__" not in p.parts)


ALL_FILES = python_files(tuple(PACKAGES))
KNOWN_MODULES = {module_name(p) for p in ALL_FILES}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of ``from [.]*X import ...`` in ``module``."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[:len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


class _Collector(ast.NodeVisitor):
    def __init__(self, path: Path) -> None:
        self.path, self.module = path, module_name(path)
        self.is_package = path.name == "__init__.py"
        self.depth = 0  # function nesting
        self.found: list[Import] = []

    def _add(self, node: ast.AST, target: str) -> None:
        found = Import(self.path.relative_to(ROOT), node.lineno, target, self.depth > 0)
        if found not in self.found:  # ``from m import a, b``: m once
            self.found.append(found)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(node, self.module, self.is_package)
        for alias in node.names:  # ``from pkg import module`` imports pkg.module
            sub = f"{base}.{alias.name}"
            self._add(node, sub if sub in KNOWN_MODULES else base)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function


def imports_of(path: Path, source: str | None = None) -> list[Import]:
    collector = _Collector(path)
    text = path.read_text() if source is None else source
    collector.visit(ast.parse(text, filename=str(path)))
    return collector.found


IMPORTS = {p: imports_of(p) for p in ALL_FILES}


def is_stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def is_shared(name: str) -> bool:
    """voxloop/'s own small modules (audio, errors, settings, models, ...)."""
    return within(name, "voxloop") and name.count(".") <= 1 and name not in NOT_SHARED and (
        name == "voxloop" or name in KNOWN_MODULES)


def is_room(name: str) -> bool:
    """A voxloop module outside the shared ones: in a room, or the CLI entry point."""
    return within(name, "voxloop") and not is_shared(name)


@dataclass(frozen=True)
class Rule:
    name: str
    applies: Callable[[str], bool]  # to the importing module
    breaks: Callable[[Import], bool]


RULES = [
    Rule("client imports only realtime.wire and voxloop's shared modules, never torch",
         lambda m: within(m, CLIENT),
         lambda i: within(i.target, "torch") or (
             is_room(i.target) and not within(i.target, CLIENT) and not within(i.target, WIRE))),
    Rule("realtime.wire imports only the standard library and other wire modules",
         lambda m: within(m, WIRE),
         lambda i: not is_stdlib(i.target) and not within(i.target, WIRE)),
    Rule("realtime never imports client",
         lambda m: within(m, REALTIME),
         lambda i: within(i.target, CLIENT)),
    Rule("codecs imports no other voxloop room (only voxloop's shared modules)",
         lambda m: within(m, CODECS),
         lambda i: is_room(i.target) and not within(i.target, CODECS)),
    Rule("distill.teachers imports nothing from distill.data, distill.student, distill.evals",
         lambda m: within(m, TEACHERS),
         lambda i: any(within(i.target, p) for p in (DATA, STUDENT, EVALS))),
    Rule("distill.data imports nothing from distill.student, distill.evals",
         lambda m: within(m, DATA),
         lambda i: any(within(i.target, p) for p in (STUDENT, EVALS))),
    Rule("distill.student imports nothing from distill.evals",
         lambda m: within(m, STUDENT),
         lambda i: within(i.target, EVALS)),
    Rule("nothing imports bench but bench itself (and the tests)",
         lambda m: not within(m, BENCH) and not within(m, "tests"),
         lambda i: within(i.target, BENCH)),
    Rule("voxloop's shared modules import no room, and torch only inside functions",
         lambda m: is_shared(m),
         lambda i: is_room(i.target) or (within(i.target, "torch") and not i.in_function)),
    Rule("tests never import from a test_* module (shared helpers live in helper modules)",
         lambda m: within(m, "tests"),
         lambda i: within(i.target, "tests") and i.target.rsplit(".", 1)[-1].startswith("test_")),
    Rule("tests never import from a conftest (pytest loads those; helpers live in helper "
         "modules, fixtures reach other folders through pytest_plugins)",
         lambda m: within(m, "tests"),
         lambda i: within(i.target, "tests") and i.target.rsplit(".", 1)[-1] == "conftest"),
]


def violations(rule: Rule) -> list[Import]:
    return [i for path, found in IMPORTS.items() if rule.applies(module_name(path))
            for i in found if rule.breaks(i)]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name.split(" (")[0].replace(" ", "-"))
def test_import_rule(rule):
    assert any(rule.applies(module_name(p)) for p in ALL_FILES), "the rule checks no file"
    broken = violations(rule)
    if broken:
        pytest.fail(f"{rule.name}:\n" + "\n".join(f"  {i}" for i in broken), pytrace=False)


def test_source_files_are_short():
    long = [f"  {p.relative_to(ROOT)}: {n} lines"
            for p in python_files(SOURCE_FOLDERS)
            if (n := len(p.read_text().splitlines())) > MAX_SOURCE_LINES]
    if long:
        pytest.fail(f"source files over {MAX_SOURCE_LINES} lines:\n" + "\n".join(long),
                    pytrace=False)


def _flagged(module: str, target: str, in_function: bool = False) -> bool:
    found = Import(Path("x.py"), 1, target, in_function)
    return any(rule.applies(module) and rule.breaks(found) for rule in RULES)


@pytest.mark.parametrize("module, target", [
    ("voxloop.client.live", "torch"), ("voxloop.client.live", "voxloop.codecs.model"),
    ("voxloop.client.live", "voxloop.realtime.session"), ("voxloop.client.live", "voxloop.cli"),
    ("voxloop.realtime.wire.protocol", "numpy"),
    ("voxloop.realtime.wire.protocol", "voxloop.audio"),
    ("voxloop.realtime.session", "voxloop.client.files"),
    ("voxloop.codecs.model", "voxloop.distill.teachers.asr"),
    ("voxloop.distill.teachers.tts", "voxloop.distill.data.plan"),
    ("voxloop.distill.teachers.asr", "voxloop.distill.evals.metrics"),
    ("voxloop.distill.data.plan", "voxloop.distill.student.model"),
    ("voxloop.distill.student.train", "voxloop.distill.evals.student"),
    ("voxloop.realtime.cli", "voxloop.bench.latency"), ("voxloop.cli", "voxloop.bench.cli"),
    ("voxloop.audio", "voxloop.codecs.model"), ("voxloop.audio", "torch"),
    ("tests.reliability.test_shutdown", "tests.reliability.test_limits"),
    ("tests.reliability.conftest", "tests.realtime.conftest"),
])
def test_the_rules_catch(module, target):
    assert _flagged(module, target)


@pytest.mark.parametrize("module, target", [
    ("voxloop.client.live", "voxloop.realtime.wire.protocol"),
    ("voxloop.client.live", "voxloop.audio"), ("voxloop.client.live", "numpy"),
    ("voxloop.realtime.wire.items", "json"), ("voxloop.codecs.model", "voxloop.errors"),
    ("voxloop.distill.evals.codec", "voxloop.distill.student.model"),
    ("voxloop.bench.latency", "voxloop.bench.report"),
    ("tests.bench.test_latency", "voxloop.bench.latency"),
    ("tests.reliability.test_shutdown", "tests.reliability.helpers"),
])
def test_the_rules_allow(module, target):
    assert not _flagged(module, target)


def test_shared_modules_may_import_torch_inside_functions():
    assert not _flagged("voxloop.training", "torch", in_function=True)


def test_the_checker_sees_every_kind_of_import():
    """The collector itself: top-level, inside functions, ``from pkg import module``,
    relative imports."""
    path = ROOT / "client" / "probe.py"  # never written: its source is given
    source = ("import torch\n"
              "from voxloop.realtime import wire\n"
              "from . import files\n"
              "def f():\n"
              "    from voxloop.codecs.model import NeuralCodec\n")
    found = [(i.line, i.target, i.in_function) for i in imports_of(path, source)]
    assert found == [(1, "torch", False), (2, "voxloop.realtime.wire", False),
                     (3, "voxloop.client.files", False), (5, "voxloop.codecs.model", True)]
    client_rule = RULES[0]
    assert [client_rule.breaks(i) for i in imports_of(path, source)] == [True, False, False,
                                                                         True]
