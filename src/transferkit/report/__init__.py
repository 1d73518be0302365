"""`transferkit compare`: every route on one data set, one self-contained HTML report, one recommendation.

    from transferkit.report import CompareSettings, run_compare, render_report, summary_lines
    doc = run_compare(CompareSettings(data="bundled:sentiment-tweets", sample=600), "probe:logreg,finetune:head",
                      "report/", budget_s=600)
    render_report(doc, "report/")          # report/index.html

Names load on first use, so a strategy's child process (`transferkit.report.child`) does not import matplotlib.
"""

from importlib import import_module

_WHERE = {"publish_best": "best",
          "render_report": "html", "CompareSettings": "inputs", "run_compare": "runner", "CompareError": "specs",
          "parse_budget": "specs", "parse_strategies": "specs", "valid_specs": "specs", "recommend": "summary",
          "summary_lines": "summary"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"transferkit.report.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'transferkit.report' has no attribute {name!r}")
