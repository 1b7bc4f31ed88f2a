"""The start-up profile explains a miss by what the worker imports beyond the raw loop."""

from __future__ import annotations

from benchmarks.profiling import import_packages, imports_beyond

WORKER = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |     botocore.exceptions
import time:      2000 |       2100 |   botocore
import time:      5000 |       5000 |     pydantic.fields
import time:      1000 |       6000 |   pydantic
import time:       700 |       700 | worker
not an import line
"""
RAW = """\
import time:      1500 |       1500 |   botocore
"""


def test_import_time_is_summed_by_top_level_package_from_own_times() -> None:
    assert import_packages(WORKER) == {"botocore": 2100, "pydantic": 6000, "worker": 700}


def test_the_worker_s_imports_beyond_the_raw_loop_largest_first() -> None:
    text = imports_beyond(import_packages(WORKER), import_packages(RAW))
    lines = text.splitlines()
    assert lines[0].startswith("import time beyond the raw loop's: +7.3 ms (worker 8.8, raw loop 1.5;")
    assert [line.split()[-1] for line in lines[2:]] == ["pydantic", "worker", "botocore"]
    assert lines[2].split()[:3] == ["6.0", "0.0", "+6.0"]
    assert lines[4].split()[:3] == ["2.1", "1.5", "+0.6"]
