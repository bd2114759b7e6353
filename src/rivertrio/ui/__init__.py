"""The web dashboard: queues, jobs, the leader, periodic jobs and workflows; retry, cancel, pause.

``rivertrio ui`` serves it; `create_app` makes it an ASGI app to serve or mount
in your own Trio program (it runs on Trio through AnyIO). Needs the ``ui``
extra: ``pip install 'rivertrio[ui]'``.
"""

from __future__ import annotations

try:
    import hypercorn  # noqa: F401
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"rivertrio.ui needs the 'ui' extra ({exc.name} is missing): pip install 'rivertrio[ui]'"
    ) from exc

from ._app import create_app
from ._server import serve

__all__ = ["create_app", "serve"]
