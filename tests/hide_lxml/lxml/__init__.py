"""Put this directory first on PYTHONPATH to run a process as if lxml were not installed
(tests/dav/test_hostile.py serves with and without it)."""

raise ImportError("lxml is hidden from this process by tests/hide_lxml")
