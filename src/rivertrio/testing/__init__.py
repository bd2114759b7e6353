"""Tools for testing code built on rivertrio, and rivertrio itself. Not imported by default."""

from __future__ import annotations

from ._lifecycle import ServiceLifecycleMachine as ServiceLifecycleMachine
from ._lifecycle import stress_start_stop as stress_start_stop
