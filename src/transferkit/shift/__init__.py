"""Shift diagnostics: is the target drawn from another distribution than the source, and how big is the gap?"""

from transferkit.shift.labels import bbse, class_drift
from transferkit.shift.report import ShiftReport, shift_report
from transferkit.shift.twosample import median_bandwidth, mmd_test, proxy_a_distance

__all__ = ["ShiftReport", "bbse", "class_drift", "median_bandwidth", "mmd_test", "proxy_a_distance", "shift_report"]
