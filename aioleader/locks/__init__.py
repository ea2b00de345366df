"""Locks that need no Kubernetes API of their own: in-process, file-based, and the multi-lock
that combines two locks to migrate an election from one to the other."""

from __future__ import annotations

from .._exports import publish as _publish
from ._file import FileLock as FileLock
from ._memory import MemoryLock as MemoryLock
from ._multi import MultiLock as MultiLock

__all__ = ("FileLock", "MemoryLock", "MultiLock")

_publish(globals())
