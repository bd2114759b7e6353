"""The documentation's code examples: where they are, and what each one's ``main`` returns.

Each file under docs/examples/ exposes ``async def main(database_url, schema)``
and returns what it did; the docs include the files (pymdownx.snippets), so
the code a reader sees is the code the tests run.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples"

#: What each example's ``main`` returns, in the form compared with RESULTS.
EXPECTED: dict[str, Callable[[Any], object]] = {
    "quickstart": lambda r: r.state,
    "workers": sorted,
    "inserting": lambda r: r,
    "transactions": lambda r: r,
    "unique": lambda r: r,
    "unique_fields": lambda r: r,
    "snooze_cancel": lambda r: r,
    "retries": lambda r: r,
    "queues": lambda r: r,
    "events": lambda r: r,
    "worker_app": lambda r: r,
    "poll_only": lambda r: r,
    "migrations": lambda r: r,
    "many_clients": lambda r: r,
    "cancel_running": lambda r: r,
    "pause_resume": lambda r: r,
    "scheduled": lambda r: r,
    "job_management": lambda r: r,
    "periodic": lambda r: r,
    "testing_workers": sorted,
    "dashboard": lambda r: r,
    "middleware": lambda r: r,
    "observability": lambda r: r,
    "job_output": lambda r: r,
    "complete_in_tx": lambda r: r,
    "insert_asyncio": lambda r: r,
    "insert_sync": len,
    "insert_riverqueue": lambda r: r,
    "flow_limits": lambda r: r,
    "flow_rates": lambda r: r,
    "sequences": lambda r: r,
    "workflows": lambda r: r,
}
RESULTS: dict[str, object] = {
    "quickstart": "completed",
    "workers": ["notify_uploader", "resize_image"],
    "inserting": {
        "one": ("billing", 2, 5, ["europe"]),
        "many": ["billing", "urgent"],
        "count": 1000,
    },
    "transactions": {"orders": 1, "jobs": 1},
    "unique": [False, True, False],
    "unique_fields": [False, True, False],
    "snooze_cancel": {
        "poll_export": ("completed", 1, 2),
        "charge_card": ("cancelled", 1, None),
    },
    "retries": {
        "flaky": ("completed", 3, 2),
        "gone": ("cancelled", 1, 1),
        "down": ("discarded", 3, 3),
    },
    "queues": ["default", "video", "video-hd"],
    "events": {"job_completed": 10, "job_failed": 3},
    "worker_app": "completed",
    "poll_only": "completed",
    "migrations": [8, 8, 8],
    "many_clients": 200,
    "cancel_running": ["running", "cancelled"],
    "pause_resume": ["queue_paused", "queue_resumed", "job_completed"],
    "scheduled": ["scheduled", "completed"],
    "job_management": {"same": True, "seen": 26, "retried": "available", "gone": 26},
    "periodic": (True, "prune", True),
    "testing_workers": [
        "test_sign_up_enqueues_a_welcome",
        "test_unknown_user_is_cancelled",
        "test_welcome_sends_an_email",
    ],
    "dashboard": ["monthly_report"],
    "middleware": {
        "tenants": ["acme"],
        "outcomes": {"welcome": "job_completed", "payout": "job_failed"},
        "payout_error": "RuntimeError: the ledger is closed for maintenance",
        "timed": ["payout", "welcome"],
    },
    "observability": {
        "spans": ["POST /checkout", "river.insert_many", "river.work/send_invoice"],
        "one_trace": True,
        "metrics": ["river.work_count", "river.work_duration", "river.work_duration_histogram"],
        "log": [{"attempt": 1, "log": "INFO rendering the invoice of order 42\nINFO sent\n"}],
    },
    "job_output": {
        "output": {"album": 7, "thumbnails": 12},
        "progress": (100.0, "12 of 12 photos"),
        "reviewed_by": "ann",
    },
    "complete_in_tx": {"state": "completed", "payments": 1},
    "insert_asyncio": ["job_completed"],
    "insert_sync": 2,
    "insert_riverqueue": 42,
    "flow_limits": {"within_limits": True},
    "flow_rates": {"started": 10, "most_in_a_second": 5},
    "sequences": {"cus_a": [1, 2, 3], "cus_b": [1, 2, 3]},
    "workflows": {
        "waiting_at_first": ["large", "publish", "small"],
        "publish_read": {"small": {"size": 320}, "large": {"size": 1920}},
        "finished": True,
    },
}

#: Examples of features not built yet: they are in the docs but not run yet.
PENDING: dict[str, str] = {}


def load(name: str) -> ModuleType:
    """Import docs/examples/NAME.py as a module of its own."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
