"""One exception hierarchy for the core. Each class carries its errno (for FUSE) and HTTP
status (for WebDAV); faces translate at their edge, in one table each, from these attributes.

``FsError`` and subclasses are expected outcomes of a request (a missing file, a full disk).
Anything else escaping the core is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno as _errno


class FsError(Exception):
    """Base of the expected errors; ``errno`` and ``http_status`` say how faces report it."""
    errno = _errno.EIO
    http_status = 500

    def __init__(self, message: str = "", *args):
        super().__init__(message or self.__doc__, *args)


class NotFound(FsError):
    """No such file or directory."""
    errno = _errno.ENOENT
    http_status = 404


class Exists(FsError):
    """The name exists already."""
    errno = _errno.EEXIST
    http_status = 405


class NotEmpty(FsError):
    """The directory is not empty."""
    errno = _errno.ENOTEMPTY
    http_status = 409


class NotADirectory(FsError):
    """A path component is not a directory."""
    errno = _errno.ENOTDIR
    http_status = 409


class IsADirectory(FsError):
    """The operation needs a file, and found a directory."""
    errno = _errno.EISDIR
    http_status = 405


class InvalidName(FsError):
    """The name is not valid UTF-8, contains '/' or NUL, or is empty, '.' or '..'."""
    errno = _errno.EINVAL
    http_status = 400


class NameTooLong(InvalidName):
    """The name is longer than 255 bytes in UTF-8."""
    errno = _errno.ENAMETOOLONG
    http_status = 414


class InvalidArgument(FsError):
    """An argument is out of range (a negative offset, moving a directory into itself)."""
    errno = _errno.EINVAL
    http_status = 400


class NoSpace(FsError):
    """The local cache is full of data not yet uploaded, or a quota is exhausted."""
    errno = _errno.ENOSPC
    http_status = 507


class Unavailable(FsError):
    """The object store cannot be reached; the data needed is not in the local cache."""
    errno = _errno.EIO
    http_status = 503


class Corrupt(FsError):
    """A stored object failed verification (wrong checksum, bad header)."""
    errno = _errno.EIO
    http_status = 500


class BadBody(FsError):
    """The request body cannot be read to its declared end (malformed framing, cut off,
    or the connection failed); nothing it carried is kept."""
    errno = _errno.EIO
    http_status = 400


class ChecksumMismatch(FsError):
    """The content does not match the checksum the client sent."""
    errno = _errno.EIO
    http_status = 400


class VolumeError(FsError):
    """The volume cannot be opened as configured (format, lease, data dir)."""
    errno = _errno.EIO
    http_status = 500


class NotPermitted(FsError):
    """The operation is not permitted on this kind of inode."""
    errno = _errno.EPERM
    http_status = 403


class NoAttribute(FsError):
    """The extended attribute is not set."""
    errno = _errno.ENODATA
    http_status = 404


class Conflict(FsError):
    """The file changed underneath the operation; retry it."""
    errno = _errno.EAGAIN
    http_status = 409


class Locked(FsError):
    """A WebDAV lock held by someone else covers the path (RFC 4918 7): the change waits until
    the lock is released or expires. A mount, which cannot send lock tokens, gets EACCES."""
    errno = _errno.EACCES
    http_status = 423
