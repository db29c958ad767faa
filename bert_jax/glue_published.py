"""Published GLUE dev scores the suite's report shows beside ours: "published, not run here".

Every number was read from the source named with it (dev sets; x 100). A missing number is
shown as "-", never estimated.
"""

from __future__ import annotations

# model -> (title, source, {(task, metric): score x 100}, {average key: score x 100})
PUBLISHED: dict[str, tuple[str, str, dict[tuple[str, str], float], dict[str, float]]] = {}

HEADER = "published, not run here"


def cell(task: str, metric: str) -> str:
  """The published scores of every model for one task metric, "a / b"."""
  if not PUBLISHED:
    return "-"
  return " / ".join(_number(scores.get((task, metric))) for _, _, scores, _ in PUBLISHED.values())


def average_cell(key: str) -> str:
  if not PUBLISHED:
    return "-"
  return " / ".join(_number(averages.get(key)) for _, _, _, averages in PUBLISHED.values())


def source_lines() -> list[str]:
  """What the published column holds and where each number comes from."""
  if not PUBLISHED:
    return []
  titles = " / ".join(title for title, _, _, _ in PUBLISHED.values())
  lines = [f"Published column (not run here): {titles}."]
  lines += [f"- {title}: {source}" for title, source, _, _ in PUBLISHED.values()]
  return lines


def _number(x: float | None) -> str:
  return "-" if x is None else f"{x:.1f}"
