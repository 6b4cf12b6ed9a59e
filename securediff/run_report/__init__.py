"""`securediff report RUN`: one self-contained `RUN/report.html` a person can read.

Only a finished run whose manifest verifies is reported, and every file the
page shows that the manifest pins must still carry its recorded digest: the
page must never present an edited statement or ledger as the run's own. Files
written after the run finished (audit/, sampled.png) are shown and marked so.
"""

from __future__ import annotations

from securediff.run_report.build import REPORT_NAME, SECTIONS, build_report, write_report

__all__ = ["REPORT_NAME", "SECTIONS", "build_report", "write_report"]
