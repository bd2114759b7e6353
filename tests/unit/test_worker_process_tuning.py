"""A worker process the command line starts sets up Python's garbage collector for its work."""

from __future__ import annotations

import json
import subprocess
import sys

from rivertrio._cli._tuning import WORKER_GC_THRESHOLD

_CHILD = """
import gc, json
from rivertrio._cli._tuning import tune_worker_process
before = gc.get_threshold()
tune_worker_process()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_tuning_freezes_what_is_loaded_and_raises_the_youngest_threshold() -> None:
    # In a process of its own: the settings are the interpreter's, for good.
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(out.stdout)
    assert seen["after"] == [WORKER_GC_THRESHOLD, *seen["before"][1:]]
    assert seen["frozen"] > 1000  # the modules loaded so far, out of every collection
