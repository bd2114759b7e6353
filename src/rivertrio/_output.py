"""`record_output`: a worker stores a JSON result with its job, as River's ``RecordOutput``."""

from __future__ import annotations

import json

from ._exceptions import InvalidInputError
from ._executor import running_job
from ._job import METADATA_OUTPUT, json_value_problem

__all__ = ["MAX_OUTPUT_BYTES", "record_output"]

#: River's limit on recorded output: 32 MiB of JSON.
MAX_OUTPUT_BYTES = 32 * 1024 * 1024


def record_output(value: object) -> None:
    """Store `value` (anything JSON can hold) with the job being worked; not a checkpoint.

    It is written with the job's outcome, whatever the outcome, in the job's
    metadata under ``"output"`` (River's key, so River's clients and UI read
    it too), and read back with `JobRow.output`. A later call replaces an
    earlier one. Call it before the work returns: the outcome is written then
    (and with `job_complete_tx`, call it before that).

    Raises:
        RuntimeError: Called outside a job's work.
        InvalidInputError: `value` is not storable as JSON, or its JSON is over
            32 MiB (River's limit).
    """
    handle = running_job("record_output()")
    problem = json_value_problem(value)
    if problem is not None:
        raise InvalidInputError(f"record_output: the output {problem}")
    # ASCII (json escapes the rest), so its length is its size in bytes.
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    size = len(text)
    if size > MAX_OUTPUT_BYTES:
        raise InvalidInputError(
            f"record_output: the output is {size:,} bytes of JSON; at most "
            f"{MAX_OUTPUT_BYTES:,} (32 MiB) are stored"
        )
    handle.set_update(METADATA_OUTPUT, text)
