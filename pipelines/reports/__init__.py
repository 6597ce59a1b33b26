"""Outputs: the processing step (:func:`refresh_outputs`), the dispatch report, the follow-up
lists and data-quality sheets, the spreadsheet writers and the index page."""

from pipelines.reports.process import Outputs, refresh_outputs

__all__ = ["Outputs", "refresh_outputs"]
