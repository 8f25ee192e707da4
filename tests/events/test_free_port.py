"""Free ports for servers that restart on their port (libs/events/embedded.py `free_port`).

A port from bind(0) lies in the kernel's ephemeral range, where any outgoing connection made
meanwhile can take it as its local port: a node killed and restarted on its ports then fails
with "address already in use" (it did, at random, in the cluster chaos test). Ports from below
that range cannot be taken that way.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from libs.events import embedded
from libs.events.embedded import ephemeral_ports, free_port, port_is_free


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low, _ = ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= port < low and port != 4222 for port in ports), ports
    assert all(port_is_free("127.0.0.1", port) for port in ports)


def test_a_port_in_use_is_not_handed_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        port = free_port()
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_is_free("127.0.0.1", port)
        assert all(free_port() != port for _ in range(200))


def test_outgoing_connections_never_take_a_handed_out_port() -> None:
    """What the restart needs: a server's port closed (a crash), a burst of client connections
    meanwhile, then the same port bound again."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as crashed:
        crashed.bind(("127.0.0.1", port))
        crashed.listen()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", free_port()))
        other.listen(512)
        clients = [socket.create_connection(other.getsockname()) for _ in range(300)]
        try:
            local_ports = {client.getsockname()[1] for client in clients}
            assert port not in local_ports
            assert all(p >= ephemeral_ports()[0] for p in local_ports)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as restarted:
                restarted.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                restarted.bind(("127.0.0.1", port))
        finally:
            for client in clients:
                client.close()


def test_without_the_kernel_s_range_iana_s_is_assumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "_EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert ephemeral_ports() == (49152, 65535)
    assert all(10_000 <= free_port() < 49152 for _ in range(20))


def test_a_range_that_leaves_no_room_below_falls_back_to_any_free_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wide = tmp_path / "ip_local_port_range"
    wide.write_text("1024\t65535\n")
    monkeypatch.setattr(embedded, "_EPHEMERAL_RANGE_FILE", wide)
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports) and 4222 not in ports
    assert all(port_is_free("127.0.0.1", port) for port in ports)
