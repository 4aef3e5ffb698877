"""`llgbm diagnostics-table`: the diagnostics stage's table (`results/diagnostics/report.md`), with the
machine and commit it came from, between a document's diagnostics markers."""
from __future__ import annotations

import shlex
from pathlib import Path

from llgbm.infra.io import read_text, write_bytes_atomic
from llgbm.infra.paths import DIAGNOSTICS_REPORT
from llgbm.infra.provenance import machine_description
from llgbm.study.blocks import diagnostics_block, replace_marked
from llgbm.study.experiments import resolve_commit


def diagnostics_table(readme: str, repo: str) -> str:
    """Write the table of `repo`'s diagnostics report between the diagnostics markers of `readme`; returns
    the line saying so."""
    path = Path(readme)
    text = read_text(path, "README")
    replace_marked(text, "", str(path), "diagnostics")  # no markers: stop before reading anything else
    report = read_text(Path(repo) / DIAGNOSTICS_REPORT, "diagnostics report; run `dvc repro diagnostics`")
    table = report.split("\n", 1)[1].strip() if report.startswith("# ") else report.strip()  # its title is README's
    command = shlex.join(["llgbm", "diagnostics-table", "--readme", readme] + (["--repo", repo] if repo != "." else []))
    block = diagnostics_block(table, machine=machine_description(),
                              commit=resolve_commit(repo, "HEAD") or "unknown (no git commit)", command=command)
    write_bytes_atomic(path, replace_marked(text, block, str(path), "diagnostics").encode())
    return f"wrote the diagnostics table between the markers of {path}"
