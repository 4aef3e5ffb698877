"""`llgbm compare`: the finished runs of one key (the run archive and DVC's experiments, llgbm.study.run_archive)
compared arm by arm (llgbm.study.report), plotted (llgbm.study.plot) and written where asked: stdout, a
file, a document's compare block."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Callable, Mapping

from llgbm.infra.io import read_json, read_text, write_bytes_atomic
from llgbm.infra.provenance import machine_description

# Through the modules, not their names: tests stand in for the DVC and git calls (exp_rows, workspace_key).
from llgbm.study import experiments, run_archive
from llgbm.study.blocks import readme_block, replace_marked
from llgbm.study.experiments import Run
from llgbm.study.factor_report import factor_section
from llgbm.study.plot import DEFAULT_PLOT, chance_level, heldout_vs_tasks, reference_points, write_plot
from llgbm.study.report import comparison_report

# Writes what the command reports, as given (newlines included): the CLI's stdout.
Echo = Callable[[str], object]


def compare_command(repo: str, revs: list[str] | None, runs: str | None, key: str | None, out: str | None,
                    readme: str | None, plot: str | None, block: str = "compare", folds: list[int] | None = None,
                    by_factor: bool = False) -> str:
    """The command line that regenerates what this `llgbm compare` writes (from the archive: --record is
    not needed again)."""
    words = ["llgbm", "compare"]
    if repo != ".":
        words += ["--repo", repo]
    if revs:
        words += ["--rev", *revs]
    for option, value in (("runs", runs), ("key", key), ("out", out), ("readme", readme), ("plot", plot)):
        if value:
            words += [f"--{option}", str(value)]
    if block != "compare":
        words += ["--block", block]
    if folds:
        words += ["--folds", *map(str, folds)]
    if by_factor:
        words += ["--by-factor"]
    return shlex.join(words)


def compare(*, repo: str, revs: list[str] | None, runs: str | None, record: bool, key: str | None,
            out: str | None, readme: str | None, plot: str | None, echo: Echo, block: str = "compare",
            folds: list[int] | None = None, by_factor: bool = False) -> None:
    """Report the runs of `key` (default: the workspace's) from the archive `runs` (default: in `repo`) and
    the DVC experiments of `revs`; with `record`, add the experiments to the archive first. The report goes to
    `echo`, and to `out`; the plot to `plot` (default with `readme`: DEFAULT_PLOT beside it); with `readme`,
    both and their provenance go between its markers named `block` (one document can hold several
    studies). With `folds`, only the runs that held out those folds (a curve run on one fold is not read
    beside arms pooled over five). With `by_factor`, or where a run records validation figures or below-chance
    counts, a section on validation and factors follows the table (llgbm.study.factor_report). What can fail
    fast is checked before the slow part: the markers, then the archive, then DVC."""
    readme_path = Path(readme) if readme else None
    readme_text = read_text(readme_path, "README") if readme_path else None
    if readme_text is not None:
        replace_marked(readme_text, "", str(readme_path), block)  # no markers: stop before the slow part
    archive = Path(runs) if runs else Path(repo) / run_archive.DEFAULT_ARCHIVE
    selected_key, every, unkeyed, disagreements = _merged_runs(archive, repo, revs, key, record, echo)
    selected = [run for run in every if run.key == selected_key and (not folds or run.fold in folds)]
    workspace_diagnostics = Path(repo) / experiments.DIAGNOSTICS
    fallback = read_json(workspace_diagnostics, "diagnostics metrics") if workspace_diagnostics.is_file() else None
    report = (comparison_report(selected, fallback) + factor_section(selected, by_factor)
              + run_archive.archive_notes(selected_key, every, unkeyed, disagreements, archive)
              + _fold_filter_note(folds, selected, every, selected_key))
    echo(report)
    if out:
        write_bytes_atomic(Path(out), report.encode())
    plot_path = Path(plot) if plot else (readme_path.parent / DEFAULT_PLOT if readme_path else None)
    plotted = plot_path is not None and _plot(selected, fallback, plot_path, echo)
    if readme_path is not None and readme_text is not None:
        text = readme_block(report, machine=machine_description(), seeds=experiments.study_seeds(selected),
                             commits=experiments.experiment_commits(repo, selected),
                             command=compare_command(repo, revs, runs, key, out, readme, plot, block, folds, by_factor),
                             plot=Path(os.path.relpath(plot_path, readme_path.parent)).as_posix()
                             if plotted and plot_path else None)
        write_bytes_atomic(readme_path, replace_marked(readme_text, text, str(readme_path), block).encode())
        echo(f"wrote the results between the markers of {readme_path}\n")


def _fold_filter_note(folds: list[int] | None, selected: list[Run], every: list[Run], key: str) -> str:
    """With --folds: which runs of the key the table kept."""
    if not folds:
        return ""
    of_key = sum(run.key == key for run in every)
    return (f"Only the runs that held out fold {', '.join(map(str, sorted(folds)))} (`--folds`): {len(selected)} of "
            f"the key's {of_key}.\n")


def _merged_runs(archive: Path, repo: str, revs: list[str] | None, key: str | None, record: bool,
                 echo: Echo) -> tuple[str, list[Run], list[Run], list[tuple[Run, Run]]]:
    """The key to report (`key`, else the workspace's), the archived runs merged with DVC's finished
    experiments of `revs` (with `record`, saved to `archive`), the experiments that cannot be keyed, and the
    experiments that disagree with an archived run (llgbm.study.run_archive.merge_runs)."""
    archived = run_archive.load_archive(archive)  # a bad archive: stop before the slow part too
    rows = experiments.exp_rows(repo, revs)  # not a DVC repository: say that first
    key = key or run_archive.workspace_key(repo)
    new, unkeyed = run_archive.keyed(experiments.collect_runs(rows), repo)
    # Why a run failed lives in DVC's queue log, on this machine only: read once, then kept in the archive.
    failures = run_archive.new_failures(archived, new)
    explained = dict(zip(map(id, failures), experiments.failure_reasons(failures, repo)))
    runs, disagreements = run_archive.merge_runs(archived, [explained.get(id(r), r) for r in new])
    if record:
        run_archive.save_archive(archive, runs)
        echo(f"recorded {len(runs) - len(archived)} new runs in {archive} ({len(runs)} in all)\n")
    return key, runs, unkeyed, disagreements


def _plot(runs: list[Run], fallback: Mapping[str, Any] | None, path: Path, echo: Echo) -> bool:
    """Write the plot of `runs` to `path`; False (said so) where no run has a known number of training tasks."""
    series = heldout_vs_tasks(runs)
    if not series:
        echo(f"no plot: no finished run with a known number of training tasks (not written: {path})\n")
        return False
    write_plot(series, chance_level(runs, fallback), path, reference_points(runs))
    echo(f"wrote {path}\n")
    return True
