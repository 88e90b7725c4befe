"""Naming and lifecycle of Vigil's POSIX shared-memory segments.

Every segment is named ``vigil-<ownerpid>-<ring name>`` where the owner is the
supervisor process that created it.  Putting the owner's pid in the name lets a
new supervisor find and remove what a SIGKILLed predecessor left in /dev/shm
(``cleanup_stale``) without any registry file that could itself go stale.

Only the owner registers a segment with multiprocessing's resource_tracker.
Workers attach *without* registering: in Python 3.11 a plain
``SharedMemory(name)`` registers too, and then the worker's tracker (or the
shared one, when the worker exits) would unlink a segment the supervisor still
uses, or warn about "leaked" segments that were never the worker's to free.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Self

import psutil

try:  # CPython's private helper; present wherever SharedMemory is.
    import _posixshmem
except ImportError:  # pragma: no cover - non-POSIX platforms are out of scope
    _posixshmem = None

__all__ = [
    "PREFIX",
    "SHM_DIR",
    "segment_name",
    "owner_of",
    "create_segment",
    "attach_segment",
    "unlink_quietly",
    "cleanup_stale",
    "segments_of",
]

log = logging.getLogger("vigil.shm")

PREFIX = "vigil-"
SHM_DIR = "/dev/shm"
MODE = 0o600
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_OWNER_RE = re.compile(r"^vigil-(\d+)-.+$")

# Registration with the resource tracker is toggled by patching a module
# global, so creation and attachment are serialised within a process.
_lock = threading.Lock()
# Names this process created (and therefore registered with the tracker); an
# unlink of one of these must also unregister it, or the tracker warns at exit.
_created: set[str] = set()


def segment_name(owner_pid: int, ring: str) -> str:
    """Full segment name for ``ring`` owned by ``owner_pid``."""
    if not _NAME_RE.match(ring):
        raise ValueError(f"ring name {ring!r} must match [A-Za-z0-9_.-]+")
    return f"{PREFIX}{int(owner_pid)}-{ring}"


def owner_of(name: str) -> int | None:
    """Owner pid encoded in a segment name, or None for foreign names."""
    m = _OWNER_RE.match(name)
    return int(m.group(1)) if m else None


def _check_name(name: str) -> None:
    if not name or "/" in name or len(name) > 250 or not _NAME_RE.match(name):
        raise ValueError(f"bad shared-memory segment name {name!r}")


def create_segment(name: str, size: int) -> SharedMemory:
    """Create a fresh, zero-filled, owner-only (0600) segment.

    A segment already carrying this name can only be a leftover of an earlier
    run with a recycled pid, so it is replaced rather than reused: its layout
    may not match and its counters would be misleading.
    """
    _check_name(name)
    if size <= 0:
        raise ValueError(f"segment size must be positive, got {size}")
    with _lock:
        try:
            shm = SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            log.warning("replacing existing shared-memory segment %s", name)
            _unlink_raw(name)
            shm = SharedMemory(name=name, create=True, size=size)
        _created.add(name)
    # shm_open's mode is filtered by the umask; make 0600 explicit anyway so a
    # permissive umask can never expose audio to other users.
    try:
        os.fchmod(shm._fd, MODE)  # type: ignore[attr-defined]  # the fd is the only handle
    except (AttributeError, OSError):
        os.chmod(os.path.join(SHM_DIR, name), MODE)
    return shm


def attach_segment(name: str) -> SharedMemory:
    """Map an existing segment without registering it with resource_tracker."""
    _check_name(name)
    if sys.version_info >= (3, 13):  # pragma: no cover - 3.11 is the target
        return SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    with _lock:
        original = resource_tracker.register

        def _skip_shared_memory(rname: str, rtype: str) -> None:
            if rtype != "shared_memory":
                original(rname, rtype)

        resource_tracker.register = _skip_shared_memory  # type: ignore[assignment]  # a private hook
        try:
            return SharedMemory(name=name, create=False)
        finally:
            resource_tracker.register = original


def _unlink_raw(name: str) -> bool:
    """shm_unlink without touching the tracker; True if something was removed."""
    try:
        if _posixshmem is not None:
            _posixshmem.shm_unlink("/" + name)
        else:  # pragma: no cover
            os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        return False
    finally:
        if name in _created:
            _created.discard(name)
            try:
                resource_tracker.unregister("/" + name, "shared_memory")
            except Exception:  # a dead tracker must not block cleanup
                pass
    return True


def unlink_quietly(name: str) -> bool:
    """Remove a segment if it exists; never raises for a missing one.

    Safe to call from any process: the tracker is only told when this process
    is the one that registered the name (otherwise it would print a KeyError).
    """
    try:
        _check_name(name)
    except ValueError:
        return False
    with _lock:
        try:
            return _unlink_raw(name)
        except PermissionError:
            log.warning("no permission to unlink shared-memory segment %s", name)
            return False


def _owner_alive(pid: int, segment_path: str) -> bool:
    """Whether ``pid`` can still be the process that created the segment.

    A live pid that started *after* the segment was last changed is a recycled
    pid, not the owner, so the segment is stale all the same.
    """
    if pid <= 0 or not psutil.pid_exists(pid):
        return False
    try:
        started = psutil.Process(pid).create_time()
        changed = os.stat(segment_path).st_ctime
    except (psutil.Error, OSError):
        return True  # cannot tell: keep it, losing a live ring is worse
    return started <= changed + 1.0


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Unlink segments whose owner process is gone; return their names."""
    removed: list[str] = []
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:  # pragma: no cover - no /dev/shm, nothing to do
        return removed
    for name in sorted(entries):
        if not name.startswith(prefix):
            continue
        pid = owner_of(name)
        if pid is None:
            continue  # not named by us: not ours to judge
        if _owner_alive(pid, os.path.join(SHM_DIR, name)):
            continue
        if unlink_quietly(name):
            log.info("removed stale shared-memory segment %s", name)
            removed.append(name)
    return removed


def segments_of(pid: int) -> list[str]:
    """Names of the segments in /dev/shm owned by ``pid``."""
    head = f"{PREFIX}{int(pid)}-"
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(head))
    except FileNotFoundError:  # pragma: no cover
        return []


class MappedSegment:
    """What every ring shares: attach, unmap without disturbing other processes, unlink, `with`.

    Subclasses set `_shm`, `_name` and list in `_views` the attributes holding numpy views
    into the segment; those are dropped before unmapping so `close()` does not fail.
    """

    _views: tuple[str, ...] = ()
    _shm: SharedMemory | None
    _name: str

    @classmethod
    def _attach(cls, name: str, **kwargs: Any) -> Self:
        shm = attach_segment(name)
        try:
            return cls(shm, name, **kwargs)  # type: ignore[call-arg]  # every subclass takes (shm, name, ...)
        except BaseException:
            shm.close()
            raise

    def close(self) -> None:
        """Unmap; the segment stays for the other processes."""
        if self._shm is None:
            return
        for view in self._views:
            setattr(self, view, None)
        shm, self._shm = self._shm, None
        try:
            shm.close()
        except BufferError:  # a caller still holds a view; the GC unmaps later
            log.warning("%s %s: close deferred, views still exported", type(self).__name__, self._name)

    def unlink(self) -> None:
        """Remove the segment name (the owner's job at shutdown); mappings stay valid."""
        unlink_quietly(self._name)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self._name
