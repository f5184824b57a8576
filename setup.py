"""edge_derain: deraining networks -> ONNX -> TensorRT engines -> GStreamer camera pipelines."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = "0.1.0"

CORE = [
    "torch>=2.4",  # install torch==2.13.0 first on the project's CPU machines (see README)
    "numpy>=1.24",
    "pillow>=10",
    "opencv-contrib-python-headless>=5.0",  # contrib: OpenCV 5 moved the HOG people detector there
    "safetensors>=0.4",
    "tqdm>=4.66",
    "rich>=13",
]
EXTRAS = {
    "train": ["matplotlib>=3.7"],
    "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnx-graphsurgeon>=0.5"],
    # TensorRT itself comes from JetPack (Jetson) or NVIDIA's wheels (desktop); on CPU-only build
    # servers TensorRT-RTX builds engines ahead of time.
    "trt": ["onnx>=1.16", "onnx-graphsurgeon>=0.5", "tensorrt_rtx_cu13_libs", "tensorrt_rtx_cu13_bindings",
            "cuda-python>=12"],
    "gst": [],  # PyGObject + GStreamer come from the system packages (install.sh)
    "fleet": ["prometheus_client>=0.17", "paho-mqtt>=2.0"],  # --metrics-port, --events
    "dev": ["pytest>=8", "scikit-image>=0.22", "matplotlib>=3.7"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="edge_derain",
    version=VERSION,
    description="Edge deployment toolkit for single-image deraining networks on NVIDIA GPUs",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["edge_derain", "edge_derain.*"]),
    package_data={"edge_derain": ["weights/*.safetensors", "weights/*.json", "weights/*.md", "assets/*",
                                  "gst/plugin/python/*.py"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["edge-derain=edge_derain.cli:main"]},
)
