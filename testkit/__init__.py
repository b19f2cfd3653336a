"""Helpers shared by the tests and the benchmarks: real processes on loopback, never shipped in the wheel.

It lives at the repository's root, next to tests/ and bench/ (pytest's `pythonpath` and
`python -m bench.<name>` from the root find it); the exporter never imports it.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository's root
