"""ONNX export: the TensorRT-plugin graph, its portable rewrite, and the graph passes."""
from .onnx_export import ExportResult, export_model, exporter_digest, plugin_and_portable_paths, portable_path_for
from .passes import describe_custom_nodes, list_custom_nodes, make_portable

__all__ = ["ExportResult", "describe_custom_nodes", "export_model", "exporter_digest", "list_custom_nodes", "make_portable",
           "plugin_and_portable_paths", "portable_path_for"]
