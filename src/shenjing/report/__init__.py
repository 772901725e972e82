"""The HTML report: one self-contained page per run, built from the run's files alone."""

from shenjing.report.builder import ReportResult, build_index, build_report

__all__ = ["ReportResult", "build_index", "build_report"]
