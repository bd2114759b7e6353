"""A TCP server started with nursery.start, checked with rivertrio's lifecycle tools.

Run with pytest (pytest-trio for the async parts); rivertrio's own test suite runs
this file as it is.
"""

from __future__ import annotations

from functools import partial

import trio
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from rivertrio.testing import ServiceLifecycleMachine, stress_start_stop


# --8<-- [start:service]
class EchoServer:
    """Sends back whatever each client sends: ``port = await nursery.start(server.run)``.

    It stops the way most Trio servers do, by cancelling the scope around it. Its
    connection handlers run in a nursery inside ``run``, so they end with it.
    """

    def __init__(self) -> None:
        self.connections = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            serve = partial(trio.serve_tcp, self._echo, 0, host="127.0.0.1")
            listeners = await nursery.start(serve)
            task_status.started(listeners[0].socket.getsockname()[1])

    async def _echo(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            async for data in stream:
                await stream.send_all(data)


# --8<-- [end:service]


# --8<-- [start:use]
async def echo(port: int, message: bytes) -> bytes:
    async with await trio.open_tcp_stream("127.0.0.1", port) as client:
        await client.send_all(message)
        received = b""
        while len(received) < len(message):
            received += await client.receive_some()
        return received


async def test_it_echoes() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(EchoServer().run)
            assert await echo(port, b"hello") == b"hello"
            nursery.cancel_scope.cancel()


# --8<-- [end:use]


# --8<-- [start:stress]
async def test_it_starts_and_stops_cleanly() -> None:
    with trio.fail_after(30):
        server = await stress_start_stop(EchoServer, stop=None, rounds=30)
    assert server.connections == 0


# --8<-- [end:stress]


# --8<-- [start:machine]
class EchoServerMachine(ServiceLifecycleMachine[EchoServer]):
    stop_timeout = 2.0
    start_timeout = 2.0

    def __init__(self) -> None:
        super().__init__()
        self.clients: list[trio.SocketStream] = []

    def make_service(self) -> EchoServer:
        return EchoServer()

    def request_stop(self, service: EchoServer) -> None:
        self.cancel_run()  # no stop(): cancellation is how it stops

    @precondition(lambda self: self.expect_running)
    @rule(message=st.binary(min_size=1, max_size=100))
    def a_client_gets_its_echo(self, message: bytes) -> None:
        async def step() -> bytes:
            with trio.fail_after(2):
                return await echo(self.started_value, message)

        assert self.call(step) == message

    @precondition(lambda self: self.expect_running)
    @rule()
    def a_client_stays_connected(self) -> None:
        # Its handler is still running when the server stops: it must end too.
        async def step() -> None:
            self.clients.append(await trio.open_tcp_stream("127.0.0.1", self.started_value))

        self.call(step)

    def teardown(self) -> None:
        async def hang_up() -> None:
            for client in self.clients:
                await client.aclose()

        self.call(hang_up)
        super().teardown()


TestEchoServer = EchoServerMachine.TestCase
# --8<-- [end:machine]
