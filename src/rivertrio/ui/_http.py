"""Reading requests: paths under a root, who is asking, filters, forms and ids."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request

from .._exceptions import InvalidInputError
from ._filter import Filter

__all__ = [
    "Form",
    "identity",
    "int_param",
    "job_id",
    "jobs_url",
    "read_filter",
    "read_form",
    "root",
    "route_path",
    "workflow_id",
    "workflow_url",
]

_BIGINT_MAX = 2**63 - 1


def root(request: Request) -> str:
    """The path the dashboard is served under (a proxy's prefix, a mount), or ``""``."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def route_path(request: Request) -> str:
    """The request's path below the dashboard's root."""
    path = str(request.scope["path"])
    prefix = root(request)
    return path[len(prefix) :] if prefix and path.startswith(prefix) else path


def identity(request: Request) -> str:
    """Who the guard found the request is from."""
    return str(request.scope.get("rivertrio_ui.identity", "anonymous"))


def jobs_url(prefix: str, filter: Filter | None = None, **extra: Any) -> str:
    """The jobs list under `prefix` for `filter`, with `extra` query parameters."""
    params = filter.params() if filter is not None else []
    params += [(k, str(v)) for k, v in extra.items() if v is not None]
    return f"{prefix}/jobs" + (f"?{urlencode(params)}" if params else "")


def workflow_url(prefix: str, workflow_id: str) -> str:
    """A workflow's page under `prefix`."""
    # "/" quoted too: an id is any text, and a browser would resolve the ".."
    # in an id like "a/../b" before the dashboard saw it.
    return f"{prefix}/workflows/{quote(workflow_id, safe='')}"


def read_filter(params: QueryParams | Form) -> Filter:
    """The filter in query parameters or a form (``state``, ``kind``, ``queue``, ``q``).

    Raises:
        InvalidInputError: A value that is not a filter (the message says which).
    """
    return Filter.parse(
        states=params.getlist("state"),
        kinds=params.getlist("kind"),
        queues=params.getlist("queue"),
        args=params.get("q") or "",
    )


class Form:
    """A urlencoded POST body (the guard has read it and checked its CSRF token)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, key: str, default: Any = None) -> Any:
        """The first value of `key`."""
        return next((v for k, v in self.pairs if k == key), default)

    def getlist(self, key: str) -> list[str]:
        """Every value of `key`."""
        return [v for k, v in self.pairs if k == key]


async def read_form(request: Request, *, with_query: bool = False) -> Form:
    """The request's form (after its query parameters, with `with_query`)."""
    body = (await request.body()).decode("utf-8", "replace")
    pairs = parse_qsl(body, keep_blank_values=True)
    if with_query:
        pairs = [*request.query_params.multi_items(), *pairs]
    return Form(pairs)


def int_param(value: str | None, name: str, what: str = "a job id") -> int | None:
    """A job id (or another positive integer) given as text; None when not given.

    Raises:
        InvalidInputError: Not a positive 64-bit integer.
    """
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 19 or not 1 <= int(value) <= _BIGINT_MAX:
        raise InvalidInputError(f"{name}: {value!r} is not {what}")
    return int(value)


def job_id(request: Request) -> int:
    """The job id in the request's path."""
    value = int_param(request.path_params["job_id"], "job id")
    assert value is not None
    return value


def workflow_id(request: Request) -> str:
    """The workflow id in the request's path (`rivertrio.Workflows` checks it)."""
    return str(request.path_params["workflow_id"])
