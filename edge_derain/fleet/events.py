"""Detection events to an MQTT broker: one JSON message per processed frame, for a site's collector.

``--events mqtt://HOST[:PORT]/TOPIC`` (port 1883 by default; ``mqtts://`` for TLS on 8883). Each message
is published with QoS 1 (at least once) to ``TOPIC/<stream>``::

    {"stream": "cam0", "frame": 42, "pts_ns": 1400000000, "time": 1764850000.123,
     "detections": [{"label": "person", "score": 0.91, "box": [x1, y1, x2, y2]}, ...],
     "rain_score": 4.2, "derained": true}

Boxes are in pixels of the stream's frames. :meth:`EventPublisher.close` waits (bounded) until the broker
acknowledged every message, so a run that ends cleanly delivered all its events.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class EventsUrl:
    scheme: str
    host: str
    port: int
    topic: str


def parse_events_url(url: str) -> EventsUrl:
    """``mqtt://host[:port]/topic`` -> its parts; a one-line ValueError for anything else."""
    parts = urlsplit(url)
    topic = parts.path.lstrip("/")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or not topic or port == -1 or "#" in url or "+" in topic:
        raise ValueError(f"events URL {url!r} not understood; use mqtt://HOST[:PORT]/TOPIC (e.g. "
                         f"mqtt://broker.local:1883/site1/derain)")
    return EventsUrl(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], topic)


class EventPublisher:
    """A connected MQTT client (paho-mqtt) publishing detection events; use as a context manager."""

    def __init__(self, url: str, client_id: str | None = None, connect_timeout: float = 5.0):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise RuntimeError("--events needs the paho-mqtt package: pip install 'edge_derain[fleet]'") from None
        self.url = parse_events_url(url)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"edge-derain-{uuid.uuid4().hex[:8]}")
        if self.url.scheme == "mqtts":
            self._client.tls_set()
        self._connected = threading.Event()
        self._client.on_connect = lambda client, userdata, flags, reason, props: (
            self._connected.set() if not reason.is_failure else None)
        self._pending: list = []
        self.published = 0
        where = f"{self.url.host}:{self.url.port}"
        try:
            self._client.connect(self.url.host, self.url.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise ConnectionError(f"cannot reach the MQTT broker at {where} ({exc}); start it or fix --events") from None
        self._client.loop_start()
        if not self._connected.wait(connect_timeout):
            self._client.loop_stop()
            raise ConnectionError(f"the MQTT broker at {where} did not accept the connection within "
                                  f"{connect_timeout:g} s; check its address and access rules")

    def publish(self, stream: str, frame: int, detections=(), pts_ns: int | None = None,
                rain_score: float | None = None, derained: bool = True) -> None:
        """Queue one frame's event (sent by the client's network thread)."""
        payload = {"stream": stream, "frame": int(frame), "pts_ns": pts_ns, "time": round(time.time(), 3),
                   "detections": [{"label": d.label, "score": round(float(d.score), 4),
                                   "box": [round(float(v), 1) for v in d.box]} for d in detections],
                   "rain_score": None if rain_score is None else round(float(rain_score), 3), "derained": derained}
        info = self._client.publish(f"{self.url.topic}/{stream}", json.dumps(payload), qos=1)
        self._pending = [i for i in self._pending if not i.is_published()] + [info]
        self.published += 1

    def close(self, timeout: float = 10.0) -> int:
        """Wait until the broker acknowledged every event (up to ``timeout``); return how many are unacked."""
        deadline = time.monotonic() + timeout
        for info in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info.wait_for_publish(remaining)
            except (RuntimeError, ValueError):
                break
        unacked = sum(not i.is_published() for i in self._pending)
        self._client.disconnect()
        self._client.loop_stop()
        return unacked

    def __enter__(self) -> "EventPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
