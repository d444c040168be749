"""The run report: one HTML page per run (or several runs side by side) that a browser opens from disk.

collect.py reads the stage folders of a run into plain JSON-able data (the synthesis pairs, the
mix, the SFT log, the eval items); page.py writes that data into report.html, with the static
CSS and JS of static/ inlined, and the per-pair and per-item details into chunk files beside it
that the page loads on demand with <script> tags (a page opened from file:// may not fetch()).
No server, no network.
"""

from deepwriter.viewer.page import build_report, build_run_report

__all__ = ["build_report", "build_run_report"]
