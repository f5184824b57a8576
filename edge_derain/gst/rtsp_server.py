"""An RTSP server for a pipeline's output: ``rtsp://HOST:PORT/MOUNT`` serving the RTP a ``udpsink`` sends
(the launch line of an ``rtsp:`` sink), shared by every client."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class RtspServer:
    """Serves ``launch`` at ``rtsp://HOST:port/mount`` on the default GLib main context until :meth:`close`."""

    def __init__(self, port: int, mount: str, launch: str):
        import gi

        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GstRtspServer

        self.port, self.mount = port, mount
        self.server = GstRtspServer.RTSPServer()
        self.server.set_service(str(port))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)
        self.server.get_mount_points().add_factory(mount, factory)
        self.source_id = self.server.attach(None)
        if self.source_id:
            log.warning("serving rtsp://127.0.0.1:%d%s", port, mount)

    @property
    def serving(self) -> bool:
        """False when the port could not be bound (in use)."""
        return bool(self.source_id)

    def close(self) -> None:
        if self.source_id:
            from gi.repository import GLib

            GLib.source_remove(self.source_id)
            self.source_id = 0
