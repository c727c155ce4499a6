"""``modman analyze``: read a folder of runs, compare experiments at their best settings, judge the hypotheses,
draw the figures and write the report."""

from .report import analyze, build_blocks, render_html, render_markdown

__all__ = ["analyze", "build_blocks", "render_markdown", "render_html"]
