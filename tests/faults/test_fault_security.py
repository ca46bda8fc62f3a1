"""Security settings as the daemon applies them: loopback by default, a warning whenever an
endpoint listens on all interfaces without CurveZMQ, and CurveZMQ configured through the
daemon's config with keys from ``posed keys generate``.

The publisher-level CURVE test (authorised client receives, a stranger and a plain client do
not) and the warnings of Publisher.start and Metrics.serve themselves are in
tests/test_publisher.py and tests/test_metrics.py; here the config and the service are tested.
"""

from __future__ import annotations

import logging
import shutil
import time

import pytest

from faultkit import DEMO, FakeRunner, Running, fake_bundle, free_port, make_service, wait_until
from posed.daemon.client import Subscriber
from posed.daemon.config import non_loopback_endpoints, parse_config
from posed.daemon.keys import CurveClient


def test_defaults_listen_on_loopback_only(tmp_path):
    cfg = parse_config({"model": {"bundle": "m"}, "cameras": [{"id": "a", "source": "x.mp4"}]})
    assert cfg.publisher.endpoint == "tcp://127.0.0.1:5555"
    assert cfg.metrics.host == "127.0.0.1" and cfg.metrics.enabled
    assert non_loopback_endpoints(cfg) == []
    # And the metrics socket the daemon really opens is on loopback.
    service = make_service(tmp_path, [{"id": "a", "source": str(DEMO / "clip.mp4")}],
                           runner=FakeRunner(fake_bundle()), metrics={"enabled": True, "port": 0})
    with Running(service):
        assert service.metrics_server._server.socket.getsockname()[0] == "127.0.0.1"


class _Stop(Exception):
    pass


def _start_warnings(tmp_path, caplog, **sections) -> list[str]:
    """Warnings Service.start logs before it loads the model (then stopped on purpose)."""
    service = make_service(tmp_path, [{"id": "a", "source": "x.mp4"}], **sections)

    def no_model():
        raise _Stop

    service._load_model = no_model
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="posed.daemon.service"), \
            pytest.raises(_Stop):
        service.start()
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "[::]"])
def test_publisher_on_all_interfaces_without_curve_warns(tmp_path, caplog, host):
    endpoint = f"tcp://{host}:{free_port()}"
    warnings = _start_warnings(tmp_path, caplog, publisher={"endpoint": endpoint})
    assert any(endpoint in w and "without CurveZMQ" in w for w in warnings), warnings


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_metrics_on_all_interfaces_warns(tmp_path, caplog, host):
    warnings = _start_warnings(tmp_path, caplog, metrics={"enabled": True, "host": host})
    assert any(host in w and "beyond this machine" in w for w in warnings), warnings


def test_loopback_and_curve_protected_endpoints_do_not_warn(tmp_path, caplog):
    assert _start_warnings(tmp_path, caplog, metrics={"enabled": True}) == []
    assert _start_warnings(tmp_path, caplog, publisher={
        "endpoint": "tcp://[::1]:5555"}) == []
    from posed.daemon.keys import generate_keys

    generate_keys(tmp_path / "keys")  # start() opens the key files before anything else
    (tmp_path / "allowed").mkdir()
    curve = {"server_secret_key": "keys/server.key_secret", "allowed_clients": "allowed"}
    assert _start_warnings(tmp_path, caplog, publisher={
        "endpoint": f"tcp://0.0.0.0:{free_port()}", "curve": curve}) == []


def test_curve_from_the_config_with_generated_keys(tmp_path):
    """``posed keys generate`` for the daemon and two clients, one of them allowed: only that
    one receives poses; a stranger, a client without CURVE and one that trusts the wrong
    server key receive nothing."""
    from posed.cli import main

    keys = tmp_path / "keys"
    for name in ("server", "client", "stranger", "impostor"):
        assert main(["keys", "generate", str(keys), "--name", name, "-q"]) == 0
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(keys / "client.key", allowed / "client.key")
    service = make_service(
        tmp_path, [{"id": "cam0", "source": str(DEMO / "clip.mp4"), "pace": "native",
                    "loop": True}], runner=FakeRunner(fake_bundle()),
        publisher={"endpoint": f"tcp://127.0.0.1:{free_port()}",
                   "curve": {"server_secret_key": "keys/server.key_secret",
                             "allowed_clients": "allowed"}})
    endpoint = service.cfg.publisher.endpoint
    server_key = keys / "server.key"
    with Running(service), \
            Subscriber(endpoint, curve=CurveClient(keys / "client.key_secret", server_key)) \
            as good, \
            Subscriber(endpoint, curve=CurveClient(keys / "stranger.key_secret",
                                                   server_key)) as stranger, \
            Subscriber(endpoint, curve=CurveClient(keys / "client.key_secret",
                                                   keys / "impostor.key")) as fooled, \
            Subscriber(endpoint) as plain:
        got = [good.recv(10.0) for _ in range(5)]
        assert all(m is not None and m.camera == "cam0" for m in got)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for sub in (stranger, fooled, plain):
                assert sub.recv(0.05) is None
        assert not stranger.meta and not fooled.meta and not plain.meta
    assert [m.seq for m in got] == sorted(m.seq for m in got)


# ----------------------------------------------------------------------------- sockets

def _wait_event(monitor, event: int, timeout: float = 10.0) -> bool:
    """Whether ``event`` arrives on a socket monitor within ``timeout``."""
    from zmq.utils.monitor import recv_monitor_message

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if monitor.poll(100) and recv_monitor_message(monitor)["event"] == event:
            return True
    return False


def test_publisher_disconnects_a_peer_that_sends_an_oversized_message():
    """Before CURVE or any subscription, a peer can send the daemon anything: a message over
    the subscription size limit must cut it off, not be buffered."""
    import zmq

    from posed.daemon.publisher import MAX_SUBSCRIPTION_BYTES, Publisher

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    with Publisher(endpoint, ["a"]) as pub:
        hostile = ctx.socket(zmq.XSUB)
        monitor = hostile.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        try:
            hostile.connect(endpoint)
            assert _wait_event(monitor, zmq.EVENT_CONNECTED)
            hostile.send(b"\x02" + b"x" * (4 * MAX_SUBSCRIPTION_BYTES))
            assert _wait_event(monitor, zmq.EVENT_DISCONNECTED)
        finally:
            hostile.disable_monitor()
            monitor.close(linger=0)
            hostile.close(linger=0)
        with Subscriber(endpoint) as sub:  # and the daemon serves everyone else as before
            assert sub.wait_for_meta(10.0)
            assert pub.wait_for_subscribers(1, 10.0)
    ctx.term()


def test_subscriber_disconnects_from_a_publisher_that_sends_an_oversized_frame():
    import zmq

    from posed.daemon.client import MAX_FRAME_BYTES

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    hostile = ctx.socket(zmq.XPUB)
    monitor = hostile.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        hostile.bind(endpoint)
        with Subscriber(endpoint):
            assert hostile.poll(10_000) and hostile.recv().startswith(b"\x01")
            hostile.send_multipart([b"pose.cam0", bytes(MAX_FRAME_BYTES + 1)])
            assert _wait_event(monitor, zmq.EVENT_DISCONNECTED)
    finally:
        hostile.disable_monitor()
        monitor.close(linger=0)
        hostile.close(linger=0)
        ctx.term()


def test_wait_for_subscribers_counts_peers_not_subscriptions():
    """Each Subscriber subscribes once per camera and once to ``meta``: two of them following
    two cameras are two subscribers, not six; one leaving leaves one; a plain ZeroMQ client
    taking everything is one more."""
    from posed.daemon.publisher import Publisher

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with Publisher(endpoint, ["a"]) as pub, \
            Subscriber(endpoint, cameras=["c1", "c2"]) as first, \
            Subscriber(endpoint, cameras=["c1", "c2"]) as second:
        assert first.wait_for_meta(10.0) and second.wait_for_meta(10.0)
        assert pub.wait_for_subscribers(2, 10.0)
        assert not pub.wait_for_subscribers(3, 0.3)
        assert pub.subscribers() == 2
        second.close()
        assert wait_until(lambda: pub.subscribers() == 1)
        import zmq

        ctx = zmq.Context()
        raw = ctx.socket(zmq.SUB)  # a plain ZeroMQ client taking everything
        raw.setsockopt(zmq.SUBSCRIBE, b"")
        raw.connect(endpoint)
        try:
            assert raw.poll(10_000)  # the first meta message: its subscription is in
            assert pub.subscribers() == 2
        finally:
            raw.close(linger=0)
            ctx.term()
