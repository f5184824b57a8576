"""What a fleet of cameras needs around the pipelines: a Prometheus metrics endpoint and detection events
sent to an MQTT broker. Both are optional (``--metrics-port``, ``--events``) and import their client
libraries lazily (``pip install edge_derain[fleet]``)."""
from .events import EventPublisher, parse_events_url
from .metrics import PipelineMetrics

__all__ = ["EventPublisher", "PipelineMetrics", "parse_events_url"]
