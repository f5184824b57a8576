"""Fleet plumbing with real components: a Mosquitto broker on loopback and Prometheus scrapes over HTTP."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from edge_derain.detect import Detection
from edge_derain.fleet import EventPublisher, PipelineMetrics, parse_events_url

from conftest import free_port


class Subscriber:
    """A paho client collecting every message under a topic."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.messages, self.ready = [], threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self.ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(5)

    def wait_for(self, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_every_event_reaches_the_broker(broker):
    sub = Subscriber(broker, "site/derain/#")
    person = Detection(10, 20, 50, 120, 0.9, 0, "person")
    with EventPublisher(f"mqtt://127.0.0.1:{broker}/site/derain") as events:
        for frame in range(50):
            events.publish("cam1" if frame % 2 else "cam0", frame, [person] * (frame % 3), pts_ns=frame * 40_000_000,
                           rain_score=frame / 10, derained=frame % 5 != 0)
    messages = sub.wait_for(50)
    sub.close()
    assert len(messages) == 50
    by_frame = {payload["frame"]: (topic, payload) for topic, payload in messages}
    assert sorted(by_frame) == list(range(50))
    topic, payload = by_frame[7]
    assert topic == "site/derain/cam1" and payload["stream"] == "cam1" and payload["pts_ns"] == 280_000_000
    assert payload["detections"] == [{"label": "person", "score": 0.9, "box": [10.0, 20.0, 50.0, 120.0]}]
    assert payload["rain_score"] == 0.7 and payload["derained"] is True and by_frame[5][1]["derained"] is False


def test_events_errors_are_one_line(broker):
    for bad in ("http://x/y", "mqtt://host", "mqtt://host:99999/t", "mqtt://host/a/#"):
        with pytest.raises(ValueError, match="mqtt://HOST"):
            parse_events_url(bad)
    assert parse_events_url("mqtts://b.local/t").port == 8883
    with pytest.raises(ConnectionError, match="cannot reach the MQTT broker") as info:
        EventPublisher(f"mqtt://127.0.0.1:{free_port()}/t")
    assert "\n" not in str(info.value)


def test_metrics_endpoint_serves_prometheus_text():
    from prometheus_client.parser import text_string_to_metric_families

    metrics = PipelineMetrics(0, host="127.0.0.1")
    try:
        metrics.frames.labels(stream="cam0").inc(12)
        metrics.dropped.labels(stream="cam0").inc(3)
        metrics.fps.labels(stream="cam0").set(9.5)
        metrics.latency.labels(stage="derain").observe(0.04)
        metrics.batch.observe(4)
        metrics.gate.labels(stream="cam0").set(1)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=5).read().decode()
    finally:
        metrics.close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("edge_derain_frames_total", (("stream", "cam0"),))] == 12
    assert samples[("edge_derain_dropped_frames_total", (("stream", "cam0"),))] == 3
    assert samples[("edge_derain_fps", (("stream", "cam0"),))] == 9.5
    assert samples[("edge_derain_batch_size_count", ())] == 1
    assert samples[("edge_derain_stage_latency_seconds_bucket", (("le", "0.05"), ("stage", "derain")))] == 1
    with pytest.raises(RuntimeError, match="--metrics-port"):
        busy = PipelineMetrics(0, host="127.0.0.1")
        try:
            PipelineMetrics(busy.port, host="127.0.0.1")
        finally:
            busy.close()
