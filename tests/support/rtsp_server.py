"""A real RTSP camera for tests: gst-rtsp-server serving videotestsrc as H.264 on a loopback port.

    python tests/support/rtsp_server.py PORT [MOUNT] [WIDTH HEIGHT FPS]

Prints "ready" once the server listens; runs until killed (tests kill it to simulate a camera dropping).
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    port = sys.argv[1]
    mount = sys.argv[2] if len(sys.argv) > 2 else "/cam"
    width, height, fps = (sys.argv[3:6] if len(sys.argv) > 5 else ("160", "96", "15"))
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
                       f"framerate={fps}/1 ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast "
                       f"key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory(mount, factory)
    if not server.attach(None):
        print(f"cannot listen on {port}", flush=True)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
