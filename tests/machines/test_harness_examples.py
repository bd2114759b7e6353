"""The worked examples of the guide "Testing your own Trio services" run as tests.

They live under docs/examples/services/ and need no database. The guide includes
them (pymdownx.snippets), so the code a reader sees is the code run here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples" / "services"
GUIDE = DOCS / "guide" / "testing-services.md"


def _load(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_services_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_batcher = _load("batcher")
_echo_server = _load("echo_server")

TestBatcher = _batcher.TestBatcher
test_batches_come_out = _batcher.test_batches_come_out
test_a_missing_shield_is_caught = _batcher.test_a_missing_shield_is_caught
test_an_output_closed_too_early_is_caught = _batcher.test_an_output_closed_too_early_is_caught

TestEchoServer = _echo_server.TestEchoServer
test_it_echoes = _echo_server.test_it_echoes
test_it_starts_and_stops_cleanly = _echo_server.test_it_starts_and_stops_cleanly


def test_every_example_is_run_and_shown() -> None:
    names = {p.stem for p in EXAMPLES.glob("*.py")}
    assert names == {"batcher", "echo_server"}
    shown = set(re.findall(r'--8<-- "examples/services/(\w+)\.py', GUIDE.read_text()))
    assert shown == names
