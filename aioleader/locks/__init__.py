"""Locks that need no Kubernetes API: in-process (and, later, file-based and multi-locks)."""

from __future__ import annotations

from ._memory import MemoryLock as MemoryLock

__all__ = ("MemoryLock",)
