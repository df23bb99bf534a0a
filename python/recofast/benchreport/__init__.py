"""The benchmark report behind ``recofast bench``: the suites in ``bench/`` run through
pytest-benchmark (``suites``), the machine and the peers (``machine``), figures from the raw
JSON (``figures``), and ``REPORT.md`` with PNGs, ``results.json`` and the comparison of two
runs (``report``)."""

from recofast.benchreport.report import compare, load, run_bench, write_report
from recofast.benchreport.suites import SECTIONS, SUITES, Suite

__all__ = ["SECTIONS", "SUITES", "Suite", "compare", "load", "run_bench", "write_report"]
