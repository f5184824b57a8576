"""gst-launch-1.0 entry for the ``caption`` element: the python plugin loader imports every
``$GST_PLUGIN_PATH/python/*.py`` and registers its ``__gstelementfactory__`` (see edge_derain.gst)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the folder that holds the edge_derain package
from edge_derain.gst import plugin_element_factory  # noqa: E402

__gstelementfactory__ = plugin_element_factory("caption")
