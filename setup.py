"""edge_derain: deraining networks -> ONNX -> TensorRT engines -> GStreamer camera pipelines."""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
VERSION = "0.1.0"
# Folders at the top of the repository that the package reads at run time (edge_derain/resources.py):
# a wheel carries them as edge_derain/_resources/<name>; an editable install reads them in place.
RESOURCE_DIRS = ("pipelines", "plugins", "calibration")

CORE = [
    "torch>=2.4",  # install torch==2.13.0 first on the project's CPU machines (see README)
    "numpy>=1.24",
    "pillow>=10",
    "opencv-contrib-python-headless>=5.0",  # contrib: OpenCV 5 moved the HOG people detector there
    "safetensors>=0.4",
    "tqdm>=4.66",
    "rich>=13",
    'tomli>=1.1; python_version < "3.11"',  # tomllib is 3.11+; JetPack 6 runs Python 3.10
]
EXTRAS = {
    "train": ["matplotlib>=3.7"],
    "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnx-graphsurgeon>=0.5"],
    # TensorRT itself comes from JetPack (Jetson) or NVIDIA's wheels (desktop); on CPU-only build
    # servers TensorRT-RTX builds engines ahead of time. TensorRT-RTX is for x86_64 desktops and servers,
    # never a Jetson (it cannot target sm_87); install.sh picks the cu12/cu13 build and the cuda-python
    # major that match the driver (edge_derain/install_plan.py).
    "trt": ["onnx>=1.16", "onnx-graphsurgeon>=0.5", 'tensorrt_rtx_cu13_libs; platform_machine == "x86_64"',
            'tensorrt_rtx_cu13_bindings; platform_machine == "x86_64"', "cuda-python>=12"],
    "gst": [],  # PyGObject + GStreamer come from the system packages (install.sh)
    "fleet": ["prometheus_client>=0.17", "paho-mqtt>=2.0"],  # --metrics-port, --events
    # vermin: the Python 3.10 minimum check (tests/test_python_compat.py); tomli: its 3.10 TOML path
    "dev": ["pytest>=8", "pytest-timeout>=2.2", "scikit-image>=0.22", "matplotlib>=3.7", "vermin>=1.6", "tomli>=1.1"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})


class BuildPyWithResources(build_py):
    """Also copy the RESOURCE_DIRS into the built package, so a wheel carries them."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders
        for name in RESOURCE_DIRS:
            for source in sorted((HERE / name).rglob("*")):
                if source.is_file() and "__pycache__" not in source.parts:
                    target = Path(self.build_lib) / "edge_derain" / "_resources" / source.relative_to(HERE)
                    self.mkpath(str(target.parent))
                    self.copy_file(str(source), str(target))


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
    cmdclass={"build_py": BuildPyWithResources},
)
