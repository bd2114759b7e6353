"""The producer's own arithmetic, on a producer that never runs."""

from __future__ import annotations

from typing import Any

from rivertrio._producer import Producer, ProducerConfig


def test_poll_delay_is_jittered_within_10_percent() -> None:
    unused: Any = None  # neither the database nor the job runner is reached
    producer = Producer(
        ProducerConfig(
            driver=unused,
            client_id="test",
            queue="default",
            max_workers=1,
            fetch_cooldown=0.001,
            fetch_poll_interval=2.0,
            work=unused,
        )
    )
    delays = [producer._poll_delay() for _ in range(2000)]
    assert all(2.0 <= d <= 2.2 for d in delays)
    assert max(delays) - min(delays) > 0.15  # really jittered
