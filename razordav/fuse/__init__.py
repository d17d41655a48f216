"""The FUSE face: mount a ``Volume`` as a local file system (pyfuse3 over libfuse3).

``mount(volume, mountpoint, *, foreground=True, fuse_options=(), ready=None)`` serves until
unmounted; ``check_fuse_available(mountpoint)`` raises ``MountError`` (one line) when a mount
cannot work. Operations are in ``ops.py``, the session and the command in ``main.py``.
"""

from .mount import MountError, MountHandle, MountThread, check_fuse_available, mount

__all__ = ["MountError", "MountHandle", "MountThread", "check_fuse_available", "mount"]
