"""Metrics endpoint (scraped over real HTTP), sd_notify over real sockets, and the unit files."""

from __future__ import annotations

import configparser
import logging
import os
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from posed.daemon.metrics import DROP_REASONS, ERROR_STAGES, LATENCY_BUCKETS, Metrics
from posed.daemon.notify import Notifier
from posed.errors import ConfigError, PublishError

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"


# --- metrics -----------------------------------------------------------------------------

@pytest.fixture
def metrics():
    return Metrics()


@pytest.fixture
def served(metrics):
    server = metrics.serve("127.0.0.1", 0)
    yield metrics, server
    server.close()


def scrape(url: str) -> dict[str, list]:
    """Fetch ``url`` and return {sample name: [(labels, value), ...]}."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples, name, **labels):
    matches = [v for lab, v in samples.get(name, []) if lab == labels]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


def test_scrape_counters_histograms_gauges(served):
    m, server = served
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
    m.frames_captured.labels(camera="cam0").inc(3)
    m.frames_dropped.labels(camera="cam0", reason="policy").inc()
    m.frames_inferred.labels(camera="cam0").inc(2)
    m.frames_published.labels(camera="cam0").inc(2)
    m.errors.labels(stage="inference").inc()
    m.reconnects.labels(camera="cam0").inc()
    m.inference_seconds.observe(0.004)
    m.end_to_end_seconds.labels(camera="cam0").observe(0.012)
    m.processor_seconds.labels(processor="roi").observe(0.0001)
    m.batch_size.observe(4)
    m.queue_depth.labels(queue="cam0").set(5)
    m.capture_fps.labels(camera="cam0").set(29.97)
    m.ready.set(1)

    s = scrape(server.url)
    assert value(s, "posed_frames_captured_total", camera="cam0") == 3
    assert value(s, "posed_frames_dropped_total", camera="cam0", reason="policy") == 1
    assert value(s, "posed_frames_inferred_total", camera="cam0") == 2
    assert value(s, "posed_frames_published_total", camera="cam0") == 2
    assert value(s, "posed_errors_total", stage="inference") == 1
    assert value(s, "posed_reconnects_total", camera="cam0") == 1
    assert value(s, "posed_queue_depth", queue="cam0") == 5
    assert value(s, "posed_capture_fps", camera="cam0") == pytest.approx(29.97)
    assert value(s, "posed_ready") == 1
    assert all(name.startswith("posed_") for name in s)

    les = {lab["le"] for lab, _ in s["posed_inference_seconds_bucket"]}
    assert {float(le) for le in les if le != "+Inf"} >= {0.0005, 0.25}
    assert "+Inf" in les
    assert value(s, "posed_inference_seconds_bucket", le="0.003") == 0
    assert value(s, "posed_inference_seconds_bucket", le="0.005") == 1
    assert value(s, "posed_inference_seconds_count") == 1
    assert value(s, "posed_inference_seconds_sum") == pytest.approx(0.004)
    assert value(s, "posed_end_to_end_seconds_bucket", camera="cam0", le="0.015") == 1
    assert value(s, "posed_end_to_end_seconds_count", camera="cam0") == 1
    assert value(s, "posed_processor_seconds_bucket", processor="roi", le="0.0005") == 1
    assert value(s, "posed_batch_size_bucket", le="4.0") == 1
    assert value(s, "posed_batch_size_bucket", le="3.0") == 0


def test_latency_buckets_cover_range():
    assert LATENCY_BUCKETS[0] == 0.0005 and 0.25 in LATENCY_BUCKETS
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_add_camera_shows_zero_counters(served):
    m, server = served
    m.add_camera("cam1")
    m.add_camera("cam1")  # idempotent
    s = scrape(server.url)
    for name in ("posed_frames_captured_total", "posed_frames_inferred_total",
                 "posed_frames_published_total", "posed_reconnects_total"):
        assert value(s, name, camera="cam1") == 0
    for reason in DROP_REASONS:
        assert value(s, "posed_frames_dropped_total", camera="cam1", reason=reason) == 0
    for stage in ERROR_STAGES:
        assert value(s, "posed_errors_total", stage=stage) == 0
    assert m.cameras == {"cam1"}


def test_build_info_labels_and_replacement(served):
    m, server = served
    m.set_build_info("0.1.0", "onnx", "CPUExecutionProvider", "openfield")
    m.set_build_info("0.1.0", "onnx", "CUDAExecutionProvider", "openfield")
    s = scrape(server.url)
    assert s["posed_build_info"] == [({"version": "0.1.0", "engine": "onnx",
                                       "provider": "CUDAExecutionProvider",
                                       "model": "openfield"}, 1.0)]


def test_instances_do_not_share_state():
    a, b = Metrics(), Metrics()
    assert a.registry is not b.registry and a.registry is not REGISTRY
    a.frames_captured.labels(camera="x").inc()
    assert a.registry.get_sample_value("posed_frames_captured_total", {"camera": "x"}) == 1
    assert b.registry.get_sample_value("posed_frames_captured_total", {"camera": "x"}) is None
    assert REGISTRY.get_sample_value("posed_frames_captured_total", {"camera": "x"}) is None


def test_given_registry_is_used():
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.ready.set(1)
    assert reg.get_sample_value("posed_ready") == 1


def test_port_in_use_is_publish_error(served):
    _, server = served
    with pytest.raises(PublishError, match=rf"metrics 127\.0\.0\.1:{server.port}: cannot bind"):
        Metrics().serve("127.0.0.1", server.port)


def test_bad_port_is_config_error(metrics):
    with pytest.raises(ConfigError):
        metrics.serve("127.0.0.1", 70000)


def test_all_interfaces_warns_and_close_is_idempotent(metrics, caplog):
    with caplog.at_level(logging.WARNING, logger="posed.daemon.metrics"):
        server = metrics.serve("0.0.0.0", 0)
    try:
        assert "all interfaces" in caplog.text
        assert scrape(f"http://127.0.0.1:{server.port}/metrics") is not None
    finally:
        server.close()
        server.close()
    with pytest.raises(OSError):  # the port is released
        urllib.request.urlopen(server.url, timeout=2)


def test_ipv6_loopback(metrics):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = metrics.serve("::1", 0)
    except PublishError:
        pytest.skip("::1 not configured")
    try:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        assert "posed_ready" in scrape(server.url)
    finally:
        server.close()


# --- sd_notify ---------------------------------------------------------------------------

@pytest.fixture
def receiver(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


def test_notifier_sends_datagrams(receiver):
    sock, path = receiver
    n = Notifier(path)
    assert n.enabled
    n.ready()
    assert sock.recv(4096) == b"READY=1"
    n.status("warming up\nstill")
    assert sock.recv(4096) == b"STATUS=warming up still"
    n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert n.send("A=1", "B=2") is True
    assert sock.recv(4096) == b"A=1\nB=2"
    n.close()


def test_notifier_reads_env_and_abstract_socket(monkeypatch):
    name = f"posed-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier()
        assert n.enabled and n.address == "@" + name
        n.ready(status="serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
        n.close()
    finally:
        sock.close()


def test_disabled_notifier_is_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for n in (Notifier(), Notifier("")):
        assert not n.enabled
        assert n.send("READY=1") is False
        n.ready(), n.status("x"), n.watchdog(), n.stopping(), n.close()


def test_relative_address_disables(caplog):
    with caplog.at_level(logging.WARNING, logger="posed.daemon.notify"):
        assert not Notifier("relative.sock").enabled
    assert "not supported" in caplog.text


def test_vanished_socket_does_not_raise(receiver, caplog):
    sock, path = receiver
    n = Notifier(path)
    sock.close()
    os.unlink(path)
    with caplog.at_level(logging.DEBUG, logger="posed.daemon.notify"):
        assert n.send("WATCHDOG=1") is False
        n.watchdog()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # logged once, then quietly
    n.close()


def test_watchdog_interval(monkeypatch):
    n = Notifier("")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert n.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    assert n.watchdog_interval() == pytest.approx(5.0)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert n.watchdog_interval() == pytest.approx(5.0)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert n.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    for bad in ("0", "-5", "abc", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert n.watchdog_interval() is None
    assert n.watchdog_interval({"WATCHDOG_USEC": "2000000"}) == pytest.approx(1.0)


# --- unit files --------------------------------------------------------------------------

def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file, keeping every value of keys that may repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, val = line.partition("=")
        current.setdefault(key.strip(), []).append(val.strip())
    return sections


@pytest.mark.parametrize("name", ["posed.service", "posed@.service"])
def test_unit_files(name):
    unit = read_unit(SYSTEMD / name)
    # The shape must also satisfy configparser (no stray lines outside sections).
    configparser.ConfigParser(strict=False, interpolation=None).read_string(
        (SYSTEMD / name).read_text().replace("%", "%%"))
    svc = {k: v[-1] for k, v in unit["Service"].items()}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "10",
        "Restart": "on-failure", "RestartSec": "2", "TimeoutStopSec": "5", "KillMode": "mixed",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "read-only",
        "PrivateTmp": "yes", "PrivateDevices": "no", "DevicePolicy": "closed",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "no",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "SupplementaryGroups": "video",
        "ReadWritePaths": "/var/lib/posed",
    }
    for key, want in expected.items():
        assert svc.get(key) == want, key
    assert "char-video4linux rw" in unit["Service"]["DeviceAllow"]
    assert svc["StateDirectory"].split()[0] == "posed"
    assert svc["LogsDirectory"].split()[0] == "posed"
    config = "/etc/posed/%i.yaml" if "@" in name else "/etc/posed/posed.yaml"
    assert svc["ExecStart"] == f"/usr/bin/env posed serve --config {config}"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
