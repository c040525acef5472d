"""A throwaway S3-compatible object store for tests: the cluster lab's OpenStack Swift with its
``s3api`` middleware (:func:`edge.csu.lab.swift_s3`, which says why Swift)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edge.csu import lab
from edge.csu.lab import S3Lab

from .conftest import unavailable

__all__ = ["S3Lab", "swift_s3"]


@contextmanager
def swift_s3() -> Iterator[S3Lab]:
    try:
        server = lab.swift_s3()
        started = server.__enter__()
    except lab.LabError as exc:
        unavailable(f"{exc} (tools/setup.sh)")
    try:
        yield started
    finally:
        server.__exit__(None, None, None)
