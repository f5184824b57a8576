"""Code a newcomer can hold in mind: no function in ``edge_derain/`` is longer than ``MAX_LINES`` lines unless a
``# long: <reason>`` comment line stands directly above its ``def`` (or its first decorator), saying why
splitting it would make it worse. Methods and nested functions count on their own; a function's length is
from its ``def`` line to its last line."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60
LONG_REASON = re.compile(r"^\s*#\s*long:\s*\S")


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[int, str, int]]:
    """(line of ``def``, name, length) of each function longer than ``max_lines`` without a ``# long:`` reason."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= max_lines:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        above = lines[first - 2] if first >= 2 else ""
        if not LONG_REASON.match(above):
            found.append((node.lineno, node.name, length))
    return sorted(found)


def test_the_scan_finds_a_long_function_and_accepts_a_reason():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))  # def line + MAX_LINES = one line too many
    assert long_functions(f"def f():\n{body}") == [(1, "f", MAX_LINES + 1)]
    assert long_functions(f"def f():\n{body[:-len(body.splitlines()[-1]) - 1]}") == []
    assert long_functions(f"# long: a table of cases reads best whole\ndef f():\n{body}") == []
    assert long_functions(f"# long: one state machine\n@staticmethod\ndef f():\n{body}") == []
    assert long_functions(f"# long:\ndef f():\n{body}") == [(2, "f", MAX_LINES + 1)]  # a reason must be given
    assert long_functions(f"# long: not directly above\n\ndef f():\n{body}") == [(3, "f", MAX_LINES + 1)]
    nested = "class A:\n    def m(self):\n        def inner():\n" + "".join(f"            y{i} = {i}\n"
                                                                            for i in range(MAX_LINES))
    assert [name for _, name, _ in long_functions(nested)] == ["m", "inner"]


def test_no_function_in_edge_derain_is_longer_than_the_limit_without_a_reason():
    offenders = []
    for path in sorted((REPO / "edge_derain").rglob("*.py")):
        for line, name, length in long_functions(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(REPO)}:{line} {name}() is {length} lines")
    assert not offenders, (
        f"functions over {MAX_LINES} lines (split them by responsibility, or write `# long: <why>` directly above "
        "the def where splitting would make the code worse):\n  " + "\n  ".join(offenders))
