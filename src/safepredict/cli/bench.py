"""``safepredict bench``: the offline abstention benchmark of a model on a labelled CSV.

Security: ``--model`` is loaded with :func:`joblib.load`, which unpickles the
file, and **unpickling runs code**: a malicious ``.joblib`` file can do anything
your user account can. Only benchmark model files you produced or trust.
"""

from __future__ import annotations

import csv
import difflib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from safepredict.config import TierPolicy
from safepredict.exceptions import ConfigError, InputSchemaError, SafePredictError

if TYPE_CHECKING:  # imported when the command runs, so `safepredict monitor` starts light
    from safepredict.evaluation import Evaluation

__all__ = ["bench", "load_table", "match_model_columns"]

_MAX_LISTED = 10


class BenchError(SafePredictError, ValueError):
    """A problem with the command's inputs, reported without a traceback."""


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:_MAX_LISTED])
    return shown + (f"; ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


def load_table(path: Path, target: str) -> tuple[Any, Any]:
    """Read a labelled CSV into features and target, with errors that name rows.

    Parameters
    ----------
    path : Path
        CSV file with a header row.
    target : str
        Name of the label column.

    Returns
    -------
    X : DataFrame
        Every column but ``target``.
    y : Series
        The ``target`` column.

    Raises
    ------
    InputSchemaError
        If rows have the wrong number of fields, numeric columns hold values
        that are not numbers, or ``target`` is not a column.
    """
    import pandas as pd

    if not path.is_file():
        raise InputSchemaError(f"--data {str(path)!r} is not a file; pass a CSV with a header.")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise InputSchemaError(f"{path}: the file is empty; expected a header row.")
        bad = [
            f"line {reader.line_num}: {len(row)} fields, expected {len(header)}"
            for row in reader
            if row and len(row) != len(header)
        ]
    if bad:
        raise InputSchemaError(
            f"{path}: {len(bad)} row(s) cannot be parsed ({_listing(bad)}). Every row needs one "
            f"value per header column ({len(header)}); fix or remove those rows.",
            problems=bad,
        )
    frame = pd.read_csv(path, skip_blank_lines=True)
    if target not in frame.columns:
        close = difflib.get_close_matches(target, [str(c) for c in frame.columns], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputSchemaError(
            f"{path}: there is no target column {target!r}; the columns are "
            f"{[str(c) for c in frame.columns]}.{hint} Pass the label column with --target.",
            missing=[target],
        )
    problems = []
    for col in frame.columns:
        if col == target or pd.api.types.is_numeric_dtype(frame[col]):
            continue
        values = frame[col]
        present = values.notna()
        numeric = pd.to_numeric(values, errors="coerce")
        parsed = numeric.notna() & present
        # A mostly numeric column with a few unreadable cells: name the cells.
        if parsed.sum() >= 0.5 * present.sum() and (present & ~parsed).any():
            for idx in np.flatnonzero(present & ~parsed):
                problems.append(
                    f"line {idx + 2}, column {col!r}: {values.iloc[idx]!r} is not a number"
                )
    if problems:
        raise InputSchemaError(
            f"{path}: {len(problems)} value(s) cannot be parsed ({_listing(problems)}). Fix or "
            "remove those rows (leave a cell empty for a missing value).",
            problems=problems,
        )
    return frame.drop(columns=[target]), frame[target]


def match_model_columns(model: Any, X: Any) -> tuple[Any, list[str]]:
    """Select the columns the model was fitted on, or explain what does not match.

    Returns
    -------
    X : DataFrame
        The model's columns, in its order.
    dropped : list of str
        Extra CSV columns the model does not use.
    """
    names = getattr(model, "feature_names_in_", None)
    cols = [str(c) for c in X.columns]
    if names is not None:
        expected = [str(c) for c in names]
        missing = [c for c in expected if c not in cols]
        if missing:
            extra = [c for c in cols if c not in expected]
            raise InputSchemaError(
                f"the model does not match the data: it was fitted on columns the CSV lacks "
                f"{missing}" + (f" (the CSV has other columns {extra})" if extra else "") + ". "
                "Pass the data the model was trained on, with the same column names.",
                missing=missing,
                extra=extra,
            )
        return X[expected], [c for c in cols if c not in expected]
    n_expected = getattr(model, "n_features_in_", None)
    if n_expected is not None and int(n_expected) != len(cols):
        raise InputSchemaError(
            f"the model does not match the data: it expects {int(n_expected)} features but the "
            f"CSV has {len(cols)} columns besides the target ({cols}). Pass the data the model "
            "was trained on.",
            problems=[f"n_features={len(cols)}, expected {int(n_expected)}"],
        )
    return X, []


def _load_model(path: Path) -> Any:
    if not path.is_file():
        raise BenchError(f"--model {str(path)!r} is not a file; pass a joblib-saved model.")
    import joblib

    try:
        return joblib.load(path)  # runs code from the file: trusted files only (module doc)
    except Exception as exc:  # any unpickling failure is reported as a bad model file
        raise BenchError(
            f"cannot load the model from {str(path)!r} with joblib: {type(exc).__name__}: {exc}. "
            "Save the fitted model with joblib.dump(model, path)."
        ) from exc


def _policies(paths: list[Path]) -> dict[str, TierPolicy]:
    out: dict[str, TierPolicy] = {}
    for p in paths:
        name = p.stem
        while name in out:
            name += "'"
        out[name] = TierPolicy.from_path(p)
    return out


def _compared(
    files: dict[str, TierPolicy], grid: list[float], current: TierPolicy
) -> tuple[dict[str, TierPolicy], str]:
    """The policies to compare, and a sentence saying what ``current`` is.

    The predictor runs the first ``--tiers`` file (or safepredict's default policy
    without one): that policy is listed once, under its own name or as
    ``current``. Grid policies send the rows they do not accept where the current
    policy sends its rest, so that the comparison changes one thing: the threshold.
    """
    from safepredict.evaluation import threshold_policies
    from safepredict.evaluation.recommend import fallback_action

    rest = fallback_action(current)
    grid_policies = threshold_policies(grid, reject_action=rest)
    if files:
        first = next(iter(files))
        note = (
            f"{first!r} is the predictor's policy (the first --tiers file); the other rows are "
            f"what-ifs on the same calibration and test rows. Grid policies send the rows they "
            f"do not accept to {rest!r}, like {first!r}."
        )
        return {**files, **grid_policies}, note
    note = (
        "'current' is safepredict's default policy (accept single-label conformal sets, "
        f"{rest} the rest), which the predictor runs without --tiers; grid policies send the "
        f"rows they do not accept to {rest!r} too."
    )
    return {"current": current, **grid_policies}, note


def _summary_table(ev: Evaluation, chosen: str | None = None) -> Table:
    table = Table(title="Policies on the test rows")
    table.add_column("policy", no_wrap=True)
    for col in ("accepted", "review", "abstain", "error | accepted", "cost / 1,000"):
        table.add_column(col, justify="right")

    def f(v: float, pct: bool = True) -> str:
        if math.isnan(v):
            return "-"
        return f"{v:.1%}" if pct else f"{v:,.1f}"

    for r in ev.policies.results:
        table.add_row(
            r.name + (" (recommended)" if r.name == chosen else ""),
            f(r.coverage),
            f(r.review_fraction),
            f(r.abstain_fraction),
            f(r.accepted_error),
            f(r.cost_per_1000, pct=False),
        )
    return table


#: How :mod:`safepredict.cli._app` registers :func:`bench`.
BENCH_COMMAND: dict[str, Any] = {
    "context_settings": {"allow_extra_args": True},
    "epilog": "Security: --model is loaded with joblib, which runs code stored in the file. "
    "Only load model files you trust.",
}


def bench(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="Fitted model saved with joblib.dump (trusted!).")],
    data: Annotated[Path, typer.Option(help="Labelled CSV with a header row.")],
    target: Annotated[str, typer.Option(help="Name of the label column in --data.")],
    out: Annotated[Path, typer.Option(help="Directory for report.html, summary.json, PNGs.")],
    tiers: Annotated[
        list[Path] | None,
        typer.Option(help="Tier policy TOML file(s) to compare: --tiers a.toml b.toml."),
    ] = None,
    grid: Annotated[
        list[float] | None,
        typer.Option(help="min_confidence thresholds to compare (repeatable)."),
    ] = None,
    cost_error: Annotated[
        float | None, typer.Option(help="Cost of one accepted wrong answer.")
    ] = None,
    cost_review: Annotated[float | None, typer.Option(help="Cost of one human review.")] = None,
    calibration_fraction: Annotated[
        float, typer.Option(help="Share of the rows used to calibrate (the rest is the test).")
    ] = 0.5,
    confidence_level: Annotated[float, typer.Option(help="Conformal confidence level.")] = 0.9,
    error_target: Annotated[
        list[float] | None,
        typer.Option(help="Error targets for the operating points (repeatable)."),
    ] = None,
    delta: Annotated[float, typer.Option(help="Risk level of certified points.")] = 0.05,
    tolerance: Annotated[
        float | None, typer.Option(help="Regression: an error is |y - y_hat| > tolerance.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the calibration/test split.")] = 0,
    title: Annotated[str, typer.Option(help="Report title.")] = "safepredict abstention benchmark",
    max_error: Annotated[
        float | None,
        typer.Option(help="Recommend only policies whose accepted error is at most this."),
    ] = None,
    min_accept: Annotated[
        float | None,
        typer.Option(help="Recommend only policies accepting at least this share of rows."),
    ] = None,
    explore: Annotated[
        bool,
        typer.Option(
            "--explore",
            help="Also write explorer.html: sliders for thresholds and costs, TOML to copy.",
        ),
    ] = False,
) -> None:
    """Benchmark abstention offline: risk-coverage, guaranteed points, tiers, costs.

    Splits --data into calibration and test rows, calibrates a SafePredictor
    around --model, and writes report.html (self-contained), summary.json and
    PNG plots into --out. --model is unpickled with joblib: only use trusted files.
    """
    from safepredict.evaluation import CostModel, evaluate, score_predictor
    from safepredict.evaluation.explorer import write_explorer
    from safepredict.evaluation.recommend import certification_gaps, recommend
    from safepredict.evaluation.report import PLOTS, write_report
    from safepredict.predictor import SafePredictor

    console = Console(stderr=True)
    extra = [Path(a) for a in ctx.args]
    bad_extra = [str(a) for a in extra if a.suffix != ".toml"]
    if bad_extra:
        console.print(f"[red]error:[/red] unexpected arguments {bad_extra}.")
        raise typer.Exit(2)
    tier_files = [*(tiers or []), *extra]
    try:
        cost = None
        if cost_error is not None or cost_review is not None:
            if cost_error is None or cost_review is None:
                raise ConfigError("pass both --cost-error and --cost-review (or neither).")
            cost = CostModel(cost_error=cost_error, cost_review=cost_review)
        if not 0 < calibration_fraction < 1:
            raise ConfigError(
                f"--calibration-fraction must be in (0, 1); got {calibration_fraction}."
            )
        files = _policies(tier_files)
        grid_values = list(grid or ([] if tier_files else [0.95, 0.97, 0.99]))
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            steps = 5 + len(PLOTS)
            task = progress.add_task("loading model", total=steps)

            def advance(what: str) -> None:
                progress.update(task, advance=1, description=what)

            fitted = _load_model(model)
            advance(f"reading {data.name}")
            X, y = load_table(data, target)
            X, dropped = match_model_columns(fitted, X)
            if dropped:
                console.print(f"note: columns the model does not use are ignored: {dropped}")
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(X))
            n_cal = round(len(X) * calibration_fraction)
            cal, test = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])
            advance("calibrating")
            first = next(iter(files.values())) if files else None
            predictor = SafePredictor(
                fitted,
                confidence_level=confidence_level,
                tiers=first,
                log="off",
                random_state=seed,
            )
            try:
                predictor.calibrate(X.iloc[cal], y.iloc[cal])
            except SafePredictError:
                raise
            except Exception as exc:  # the user's model failed on the user's data
                raise BenchError(
                    f"the model failed on the rows of {data.name}: {type(exc).__name__}: {exc}. "
                    "Check that --data holds the features the model was trained on."
                ) from exc
            if predictor.task_ == "regression" and tolerance is None:
                raise ConfigError(
                    "the model is a regressor: pass --tolerance (an answer is an error when "
                    "|y - y_hat| > tolerance)."
                )
            policies, current_note = _compared(files, grid_values, predictor.policy_)
            kwargs: dict[str, Any] = {"delta": delta}
            if error_target:
                kwargs["error_targets"] = list(error_target)
            test_rows = score_predictor(predictor, X.iloc[test], y.iloc[test], tolerance=tolerance)
            cal_rows = score_predictor(predictor, X.iloc[cal], y.iloc[cal], tolerance=tolerance)
            ev = evaluate(
                test_rows,
                calibration=cal_rows,
                policies=policies,
                cost=cost,
                progress=advance,
                **kwargs,
            )
            rec = recommend(ev.policies.results, max_error=max_error, min_accept=min_accept)
            ev.meta.update(
                {
                    "source": "predictor",
                    "model_name": predictor.model_name,
                    "model_version": predictor.model_version,
                    "data": str(data),
                    "model": str(model),
                    "target": target,
                    "current": current_note,
                    "uncertified": certification_gaps(policies, cal_rows),
                    "constraints": {"max_error": max_error, "min_accept": min_accept},
                    "recommendation": None if rec is None else rec.to_dict(),
                }
            )
            report = write_report(ev, out, title=title, progress=lambda s: advance(f"plot {s}"))
            explorer = None
            if explore:
                start = policies[rec.policy] if rec is not None else next(iter(policies.values()))
                explorer = write_explorer(ev, out, policy=start, title=f"{title}: policy explorer")
    except SafePredictError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    stdout = Console()
    stdout.print(_summary_table(ev, None if rec is None else rec.policy))
    stdout.print(current_note, highlight=False)
    for gap in ev.meta["uncertified"]:
        stdout.print(f"[yellow]{gap['policy']}:[/yellow] {gap['message']}", highlight=False)
    stdout.print(_recommendation_text(rec, ev.meta["constraints"]), highlight=False)
    stdout.print(f"report: {report}", highlight=False, soft_wrap=True)
    if explorer is not None:
        stdout.print(f"explorer: {explorer}", highlight=False, soft_wrap=True)


def _recommendation_text(rec: Any, constraints: dict[str, Any]) -> str:
    if rec is None:
        wanted = [f"{k.replace('_', ' ')} {v:g}" for k, v in constraints.items() if v is not None]
        return (
            f"no compared policy meets {' and '.join(wanted)}; loosen a constraint, add "
            "policies (--grid, --tiers) or calibrate on more rows."
        )
    cost = "" if math.isnan(rec.cost_per_1000) else f", cost {rec.cost_per_1000:,.1f} per 1,000"
    certified = (
        f"; certified tiers: {', '.join(rec.certified_tiers)}" if rec.certified_tiers else ""
    )
    return (
        f"recommended: {rec.policy} ({rec.criterion}): accepts {rec.coverage:.1%}, error "
        f"among accepted {rec.accepted_error:.3f} (95% upper {rec.accepted_error_upper:.3f})"
        f"{cost}{certified}."
    )
