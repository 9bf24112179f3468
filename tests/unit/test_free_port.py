"""The test servers' ports: free on every address, distinct within a run, never ephemeral."""

from __future__ import annotations

import socket

from tests.support.servers import FREE_PORTS, ephemeral_low, free_port


def test_ports_are_distinct_free_on_every_address_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(port in FREE_PORTS and port < ephemeral_low() for port in ports)
    for port in ports[:5]:
        with socket.socket() as listener:
            listener.bind(("0.0.0.0", port))


def test_a_port_something_listens_on_is_passed_over() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        held = taken.getsockname()[1]
        assert all(free_port() != held for _ in range(len(FREE_PORTS) + 1))  # past every port of the slice
