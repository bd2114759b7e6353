"""Job args for the tests of ``rivertrio.testing`` (work_job, and the require_* assertions)."""

from __future__ import annotations

from dataclasses import dataclass

import rivertrio


@dataclass
class Greet(rivertrio.JobArgs, kind="greet"):
    name: str
    times: int = 1


@dataclass
class Follow(rivertrio.JobArgs, kind="follow_up"):
    """Its fields `count` and `opts` clash with keywords of the require_* helpers."""

    to: str
    count: int = 1
    opts: str = ""
