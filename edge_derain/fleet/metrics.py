"""Prometheus metrics of running pipelines, served in the text format with the official client library.

One :class:`PipelineMetrics` per process (one process per device is the scale-out unit): Prometheus
scrapes ``http://DEVICE:PORT/metrics`` on every device of a site. Series, all labelled by ``stream``
(the camera's id) where they are per camera:

* ``edge_derain_frames_total`` / ``edge_derain_dropped_frames_total`` — frames processed / dropped
  (a leaky queue of a camera that fell behind);
* ``edge_derain_fps`` — recent frames per second;
* ``edge_derain_stage_latency_seconds`` — histogram per ``stage`` (derain, detect, end_to_end);
* ``edge_derain_batch_size`` — frames per batched derain call (multi-camera runs);
* ``edge_derain_gate_on`` — 1 while the rain gate derains, 0 while it passes frames through;
* ``edge_derain_stream_up`` — 1 while the camera delivers frames, 0 after it failed;
* ``edge_derain_detections_total`` — boxes by ``label``.
"""
from __future__ import annotations

# Latency buckets (s): from a fast engine's few ms to a CPU model's seconds.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class PipelineMetrics:
    """Metrics registry plus its HTTP endpoint (``port`` 0 picks a free one: see ``self.port``)."""

    def __init__(self, port: int, host: str = "0.0.0.0"):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
        except ImportError:
            raise RuntimeError("--metrics-port needs the prometheus_client package: "
                               "pip install 'edge_derain[fleet]'") from None
        self.registry = registry = CollectorRegistry()
        self.frames = Counter("edge_derain_frames", "Frames processed", ["stream"], registry=registry)
        self.dropped = Counter("edge_derain_dropped_frames", "Frames dropped by a leaky queue", ["stream"],
                               registry=registry)
        self.fps = Gauge("edge_derain_fps", "Recent frames per second", ["stream"], registry=registry)
        self.latency = Histogram("edge_derain_stage_latency_seconds", "Latency of a stage", ["stage"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.batch = Histogram("edge_derain_batch_size", "Frames per batched derain call", buckets=BATCH_BUCKETS,
                               registry=registry)
        self.gate = Gauge("edge_derain_gate_on", "1 while the rain gate derains", ["stream"], registry=registry)
        self.up = Gauge("edge_derain_stream_up", "1 while the stream delivers frames", ["stream"], registry=registry)
        self.detections = Counter("edge_derain_detections", "Detected boxes", ["label"], registry=registry)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise RuntimeError(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); pick another "
                               f"--metrics-port") from None
        self.port = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
