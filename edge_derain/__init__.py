"""edge_derain: single-image deraining networks for embedded NVIDIA GPUs.

Heavy optional dependencies (onnxruntime, tensorrt, gi) are imported lazily inside the modules that
need them, so ``import edge_derain`` works with only torch and numpy installed.
"""
__version__ = "0.1.0"
