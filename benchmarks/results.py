"""Shared by the benchmark scripts: the machine description and RESULTS.md sections."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform

RESULTS = pathlib.Path(__file__).resolve().parent / "RESULTS.md"
REPO = RESULTS.parents[1]


def repo_relative(path) -> str:
  """`path` as seen from the repository root, so RESULTS.md names no machine's layout."""
  return os.path.relpath(pathlib.Path(path).resolve(), REPO)


def machine() -> dict:
  return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
          "platform": platform.platform(), "machine": platform.machine(),
          "cpu_count": os.cpu_count(), "python": platform.python_version()}


def update_section(title: str, section: str, path: pathlib.Path = RESULTS) -> None:
  """Replaces the `## title` section of RESULTS.md (or appends it), keeping the others."""
  heading = f"## {title}"
  text = path.read_text() if path.exists() else "# hive benchmarks\n"
  lines = text.splitlines()
  start = next((i for i, l in enumerate(lines) if l.strip() == heading), None)
  if start is None:
    body = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
  else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    before = "\n".join(lines[:start]).rstrip("\n")
    after = "\n".join(lines[end:])
    body = (before + "\n\n" if before else "") + section.rstrip("\n") + "\n"
    if after:
      body += "\n" + after.rstrip("\n") + "\n"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(body)
