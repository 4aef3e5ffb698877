"""Generated blocks in a document (README, docs/results.md): the text between a pair of marker lines
(`<!-- NAME:begin -->`, `<!-- NAME:end -->`) is replaced, the rest of the document kept; and the two
blocks llgbm writes there, the comparison's (`compare`) and the diagnostics table's (`diagnostics`)."""
from __future__ import annotations

from llgbm.infra.errors import LlgbmError
from llgbm.infra.paths import DIAGNOSTICS_REPORT

README_BEGIN = "<!-- compare:begin -->"  # markers("compare")
README_END = "<!-- compare:end -->"


def markers(name: str) -> tuple[str, str]:
    """The README comment lines around a generated block named `name`."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_marked(text: str, block: str, path: str, name: str = "compare") -> str:
    """`text` with what lies between the markers of `name` (README_BEGIN/README_END for the comparison)
    replaced by `block`."""
    begin_mark, end_mark = markers(name)
    begin, end = text.find(begin_mark), text.find(end_mark)
    if begin < 0 or end < 0 or end < begin or text.count(begin_mark) != 1 or text.count(end_mark) != 1:
        raise LlgbmError(f"{path}: needs one '{begin_mark}' line and, after it, one '{end_mark}' line "
                         "around the generated results")
    start = begin + len(begin_mark)
    return text[:start] + "\n" + block + "\n" + text[end:]


def readme_block(report: str, *, machine: str, seeds: list[int], commits: list[str], command: str,
                 plot: str | None) -> str:
    """What goes between README's compare markers: provenance, the table and the plot."""
    lines = [f"_Written by `{command}`; edit the command, not this text._", "",
             f"- machine: {machine}",
             f"- seeds: {', '.join(str(s) for s in seeds) or 'none'}",
             f"- experiments ran on commit {', '.join(commits)}", "", report.rstrip("\n")]
    if plot is not None:
        lines += ["", f"![held-out accuracy against the number of training tasks, per objective]({plot})"]
    return "\n".join(lines)


def diagnostics_block(table: str, *, machine: str, commit: str, command: str) -> str:
    """What goes between the diagnostics markers: provenance and the diagnostics stage's table."""
    return "\n".join([f"_Written by `{command}` from `{DIAGNOSTICS_REPORT}` (the `diagnostics` stage); edit the "
                      "command, not this text._", "", f"- machine: {machine}", f"- workspace commit: {commit}", "",
                      table])
