"""The monitor's streaming aggregation: per-window counters over decision events (layer 4).

:class:`Aggregator` reads blocks of log lines and keeps, per time window, the
counts of tiers, actions, reasons and guard flags, binned confidences and the
drift counts against each calibration snapshot; joined outcomes are scored per
tier as they pass. Memory stays bounded however long the log is.

Examples
--------
>>> agg = Aggregator(0.0, {})
>>> agg.feed([b'{"event": "safepredict.decision", "tier": "auto", "action": "accept"}'], "log")
1
>>> agg.finish()
>>> agg.windows[0].n, dict(agg.windows[0].actions)
(1, {'accept': 1})
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safepredict._jsonl import loads as _loads
from safepredict.exceptions import ConfigError, MissingExtraError
from safepredict.monitoring.feature_drift import feature_counts, merge_counts
from safepredict.monitoring.reading import epoch
from safepredict.monitoring.windows import HIST_BINS, Window

if TYPE_CHECKING:
    from safepredict.monitoring.journal import Journal

__all__ = ["ENGINES", "Aggregator", "Outcome", "policy_tiers"]


@dataclass
class Outcome:
    """Outcomes joined to one tier's decisions: how many, errors, absolute error sum."""

    n: int = 0
    errors: int = 0
    abs_err_sum: float = 0.0
    scored: int = 0
    #: A worker's absolute errors in file order (the merge adds them where they fall).
    terms: list[float] | None = None


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v))
    except (TypeError, ValueError):
        return None


def _same(pred: Any, y: Any) -> bool:
    if pred is None:
        return False
    a, b = _as_number(pred), _as_number(y)
    if a is not None and b is not None:
        return a == b
    return str(pred) == str(y)


#: Confidence values buffered per (window, calibration) before they are binned.
_FLUSH_VALUES = 1 << 16
_DECISION = "safepredict.decision"
#: How many malformed events are quoted in the report (all are counted).
_MAX_EXAMPLES = 5
#: Logged input rows buffered before they are counted in the feature bins.
_FLUSH_ROWS = 1 << 12


def _number(v: Any) -> bool:
    t = type(v)
    return (t is float or t is int) and math.isfinite(v)


def _strings(v: Any) -> bool:
    return type(v) is list and all(type(r) is str for r in v)


class Aggregator:
    """Streaming per-window counters over the events of one or more logs.

    Each decision event costs a parse, a few type checks, one count of its
    (window, tier, action, calibration, batch) signature and one append of its
    confidence; confidences are binned with numpy every ``_FLUSH_VALUES`` values,
    so memory stays bounded however long the log is. With ``engine="auto"`` (and
    msgspec installed) or ``"blocks"``, a block of well-formed decision events is
    decoded and counted column-wise by
    :func:`~safepredict.monitoring.fast_blocks.fold_block` instead, to the same counts.
    """

    def __init__(
        self,
        window_s: float,
        joined: Mapping[str, Any],
        audits: Mapping[str, tuple[int, float | None]] | None = None,
        engine: str = "auto",
    ) -> None:
        self.window_s = window_s
        self.fold = _block_folder(engine)
        #: How many blocks each path read: ``"blocks"`` (column-wise) and ``"lines"``.
        self.paths: Counter[str] = Counter()
        self.joined = joined
        # decision_id -> (arrival rank, audit probability) of the outcomes tier health reads
        self.audits = audits or {}
        # (arrival rank, tier, error 0/1, audit probability) of joined accepted rows
        self.health: list[tuple[int, str, int, float | None]] = []
        self.events: Counter[str] = Counter()
        self.windows: dict[int, Window] = {}
        self.calibrations: dict[str, dict[str, Any]] = {}
        self.bins: dict[str, tuple[list[float], list[float]]] = {}
        self.per_tier: dict[str, Outcome] = {}
        self.tier_action: dict[str, str] = {}
        self.signatures: dict[tuple[Any, ...], int] = {}
        self.latency_seen: set[tuple[int, Any]] = set()
        # (window, calibration id or None, drift?) -> values
        self.values: dict[tuple[int, Any, bool], list[float]] = {}
        self.widths: set[str] = set()  # calibrations whose drift metric is the interval width
        # calibration id -> per-feature bins; (window, calibration id) -> logged input rows
        self.features: dict[str, dict[str, Any]] = {}
        self.inputs: dict[tuple[int, str], list[Any]] = {}
        self.n_inputs = 0
        self.malformed: list[dict[str, Any]] = []
        self.issues: list[dict[str, Any]] = []
        #: Lines read as ``safepredict.calibration`` events (well formed or not).
        self.calibration_lines = 0
        #: A worker process's record of what adds in file order (see
        #: :mod:`~safepredict.monitoring.journal`); ``None`` when reading in one process.
        self.journal: Journal | None = None

    def window(self, key: int) -> Window:
        """The window with index ``key``, created empty on first use."""
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = Window(start=key * self.window_s)
        return w

    def key(self, ts: Any) -> int:
        """The index of the window an ISO timestamp falls in (0 for a single window)."""
        return int(epoch(ts) // self.window_s) if self.window_s else 0

    def bad(self, source: str, ev: Mapping[str, Any], detail: str) -> None:
        """Count a malformed safepredict event and quote the first few."""
        self.events["malformed"] += 1
        if len(self.malformed) < _MAX_EXAMPLES:
            did = ev.get("decision_id")
            self.malformed.append(
                {
                    "source": source,
                    "event": str(ev.get("event")),
                    "decision_id": did if type(did) is str else None,
                    "problem": detail,
                }
            )

    # ------------------------------------------------------------ the hot loop
    def feed(self, lines: list[bytes], source: str) -> int:
        """Aggregate a block of lines; returns the number of safepredict events read.

        The block is counted column-wise when it can be (see
        :mod:`~safepredict.monitoring.fast_blocks`), else line by line.
        """
        if self.fold is not None:
            folded = self.fold(self, lines, source, _FLUSH_VALUES)
            if folded is not None:
                self.paths["blocks"] += 1
                return folded
        self.paths["lines"] += 1
        loads = _loads
        events = self.events
        signatures = self.signatures
        values = self.values
        bins = self.bins
        joined = self.joined
        widths = self.widths
        last_ts: Any = object()
        last_key = 0
        cur_key: Any = None
        cur_cal: Any = None
        cur_drift: Any = None
        cur_values: list[float] = []
        n_buffered = sum(map(len, values.values()))
        read = 0
        for line in lines:
            try:
                ev = loads(line)
                name = ev.get("event")
            except Exception:  # not JSON / not an object: another app's line, or blank
                events["skipped"] += 1
                continue
            if name != _DECISION:
                if type(name) is str and name.startswith("safepredict."):
                    read += 1
                    self.other(ev, name, source)
                    if not values:  # a calibration event flushed the buffers
                        cur_key = None
                        n_buffered = 0
                else:
                    events["skipped"] += 1
                continue
            read += 1
            tier = ev.get("tier")
            action = ev.get("action")
            cal: Any = ev.get("calibration_id")
            batch = ev.get("batch_id")
            conf = ev.get("confidence")
            reasons = ev.get("reasons")
            guard = ev.get("guard")
            if type(tier) is not str or type(action) is not str:
                self.bad(source, ev, "'tier' and 'action' must be strings")
                continue
            if (cal is not None and type(cal) is not str) or (
                batch is not None and type(batch) is not str
            ):
                self.bad(source, ev, "'calibration_id' and 'batch_id' must be strings or null")
                continue
            if conf is not None and not (
                (type(conf) is float or type(conf) is int) and 0.0 <= conf <= 1.0
            ):
                self.bad(source, ev, f"'confidence' must be a number in [0, 1]; got {conf!r:.40}")
                continue
            if reasons and not _strings(reasons):
                self.bad(source, ev, "'reasons' must be a list of strings")
                continue
            kinds: set[str] | None = None
            if guard is not None:
                if type(guard) is not dict:
                    self.bad(source, ev, "'guard' must be an object")
                    continue
                if guard.get("status") == "flag":
                    guard_reasons = guard.get("reasons") or []
                    if not _strings(guard_reasons):
                        self.bad(source, ev, "'guard.reasons' must be a list of strings")
                        continue
                    kinds = {r.split(":", 1)[0] for r in guard_reasons}
            events["decision"] += 1
            ts = ev.get("timestamp")
            if ts != last_ts:
                last_ts = ts
                last_key = self.key(ts)
            sig = (last_key, tier, action, cal, batch)
            count = signatures.get(sig)
            if count is None:
                signatures[sig] = 1
                self.new_signature(last_key, batch, ev.get("latency_s"))
            else:
                signatures[sig] = count + 1
            if reasons:
                self.window(last_key).reasons.update(reasons)
            if kinds is not None:
                w = self.window(last_key)
                w.guard_flagged += 1
                w.guard.update(kinds)
            if conf is not None or cal in bins:
                drift = cal in bins
                value = conf
                if drift and cal in widths:
                    value = _width(ev.get("conformal"))
                    if conf is not None:  # the histogram still counts the confidence
                        self.values.setdefault((last_key, cal, False), []).append(conf)
                        n_buffered += 1
                    drift = value is not None
                if value is not None:
                    if last_key != cur_key or cal != cur_cal or drift is not cur_drift:
                        cur_key, cur_cal, cur_drift = last_key, cal, drift
                        cur_values = values.setdefault((last_key, cal, drift), [])
                    cur_values.append(value)
                    n_buffered += 1
                    if n_buffered >= _FLUSH_VALUES:
                        self.flush()
                        n_buffered = 0
                        cur_key = None  # the flushed lists are gone
            if cal in self.features:
                row = ev.get("inputs")
                if type(row) is dict:
                    self.inputs.setdefault((last_key, cal), []).append(row)
                    self.n_inputs += 1
                    if self.n_inputs >= _FLUSH_ROWS:
                        self.flush_inputs()
            if joined:
                did = ev.get("decision_id")
                if type(did) is str and did in joined:
                    self.score(ev, did, tier, action, cal)
        return read

    def score(self, ev: Mapping[str, Any], did: str, tier: str, action: str, cal: Any) -> None:
        """Score a decision whose outcome is joined (and keep it for tier health if audited)."""
        err = _score(
            self.per_tier,
            tier,
            ev,
            self.joined[did],
            self.calibrations.get(str(cal)),
            self.journal is not None,
        )
        audit = self.audits.get(did)
        if err is not None and audit is not None and action == "accept":
            self.health.append((audit[0], tier, err, audit[1]))

    def new_signature(self, key: int, batch: Any, lat: Any) -> None:
        """Count a batch (and its latency) the first time one of its decisions is seen."""
        if batch is None or (key, batch) in self.latency_seen:
            return
        self.latency_seen.add((key, batch))
        w = self.window(key)
        w.batches.add(batch)
        total: Any = lat.get("total") if type(lat) is dict else None
        add = float(total) if _number(total) and total >= 0 else None
        if self.journal is not None:
            self.journal.latency.append((key, batch, add, False))
        if add is not None:
            w.latency_sum += add

    def flush(self) -> None:
        """Bin the buffered values into their windows' histograms and drift counts."""
        if self.journal is not None:  # a worker: the parent bins the journaled values
            self.values.clear()
            self.flush_inputs()
            return
        import numpy as np

        for (key, cal, drift), vals in self.values.items():
            if not vals:
                continue
            w = self.window(key)
            v = np.asarray(vals, dtype=np.float64)
            if not drift or self.calibrations[cal]["metric"] == "confidence":
                w.conf_n += len(v)
                w.conf_sum = sum(vals, w.conf_sum)  # in file order, as one running sum
                idx = np.minimum((v * HIST_BINS).astype(np.intp), HIST_BINS - 1)
                hist = np.bincount(idx, minlength=HIST_BINS).tolist()
                w.hist = [a + b for a, b in zip(w.hist, hist, strict=True)]
            if drift:
                edges = self.bins[cal]
                slot = w.drift.get(cal)
                if slot is None:
                    slot = w.drift[cal] = ([0] * (len(edges[0]) + 1), [0] * (len(edges[1]) + 1))
                for counts, e in zip(slot, edges, strict=True):
                    add = np.bincount(
                        np.searchsorted(e, v, side="left"), minlength=len(counts)
                    ).tolist()
                    counts[:] = [a + b for a, b in zip(counts, add, strict=True)]
        self.values.clear()  # in place: the hot loop holds a reference to it
        self.flush_inputs()

    def flush_inputs(self) -> None:
        """Count the buffered input rows in their calibration's feature bins, per window."""
        for (key, cal), rows in self.inputs.items():
            snapshot = self.features[cal]
            names = list(snapshot["columns"])
            X = [[_float(r.get(n)) for n in names] for r in rows]
            w = self.window(key)
            counts = feature_counts(X, snapshot, names)
            w.features[cal] = merge_counts(w.features.get(cal, {}), counts)
        self.inputs.clear()
        self.n_inputs = 0

    # ------------------------------------------------------------ other events
    def other(self, ev: dict[str, Any], name: str, source: str) -> None:
        """Aggregate a safepredict event that is not a decision."""
        try:
            if name == "safepredict.batch":
                self.batch(ev)
            elif name == "safepredict.calibration":
                self.calibration_lines += 1
                try:
                    self.calibration(ev)
                finally:
                    if self.journal is not None:
                        self.journal.calibrated(self)
            elif name == "safepredict.route":
                status = ev.get("status")
                if type(status) is not str:
                    raise TypeError("'status' must be a string")
                self.window(self.key(ev.get("timestamp"))).routes[status] += 1
                self.events["route"] += 1
            elif name == "safepredict.tier_uncertified":
                self.events["tier_uncertified"] += 1
            else:
                self.events["skipped"] += 1
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            self.bad(source, ev, str(exc) or type(exc).__name__)

    def batch(self, ev: dict[str, Any]) -> None:
        """Add a ``safepredict.batch`` summary event's counts to its window."""
        n = ev.get("n")
        if type(n) is not int or n < 0:
            raise TypeError("'n' must be a non-negative integer")
        counters = {}
        for field_name in ("tiers", "actions", "reasons", "guard_reasons"):
            c = ev.get(field_name) or {}
            if type(c) is not dict or not all(type(x) is int for x in c.values()):
                raise TypeError(f"{field_name!r} must map names to integer counts")
            counters[field_name] = c
        flagged = ev.get("guard_flagged") or 0
        if type(flagged) is not int:
            raise TypeError("'guard_flagged' must be an integer")
        lat = ev.get("latency_s") or {}
        total: Any = lat.get("total") if type(lat) is dict else None
        cal: Any = ev.get("calibration_id")
        if cal is not None and type(cal) is not str:
            raise TypeError("'calibration_id' must be a string or null")
        key = self.key(ev.get("timestamp"))
        w = self.window(key)
        w.n += n
        w.tiers.update(counters["tiers"])
        w.actions.update(counters["actions"])
        w.reasons.update(counters["reasons"])
        w.guard.update(counters["guard_reasons"])
        w.guard_flagged += flagged
        w.ids[cal] += n
        add = float(total) if _number(total) else 0.0
        w.latency_sum += add
        w.batches.add(str(ev.get("batch_id")))
        if self.journal is not None:
            self.journal.latency.append((key, str(ev.get("batch_id")), add, True))
        self.events["batch"] += 1

    def calibration(self, ev: dict[str, Any]) -> None:
        """Record a calibration snapshot: policy, certified tiers and drift bins."""
        cal_id = str(ev.get("calibration_id"))
        base = ev.get("baseline") or {}
        if type(base) is not dict:
            raise TypeError("'baseline' must be an object")
        policy = ev.get("policy") or {}
        if type(policy) is not dict:
            raise TypeError("'policy' must be an object")
        edges: tuple[list[float], list[float]] | None = None
        if base.get("metric") and base.get("n"):
            points, psi = list(base["cdf_points"]), list(base["psi_edges"])
            if not all(map(_number, points + psi)):
                raise TypeError("baseline 'cdf_points' and 'psi_edges' must be numbers")
            edges = (points, psi)
        self.flush()  # values buffered so far were read under the previous calibrations
        if self.journal is not None:
            self.journal.flushed()
        self.calibrations[cal_id] = {
            "calibration_id": cal_id,
            "timestamp": ev.get("timestamp"),
            "model_name": ev.get("model_name"),
            "model_version": ev.get("model_version"),
            "task": ev.get("task"),
            "calibration_size": ev.get("calibration_size"),
            "policy": policy,
            "certified": ev.get("certified") or {},
            "metric": base.get("metric"),
            "baseline": base,
        }
        if edges is not None:
            self.bins[cal_id] = edges
        features = base.get("features")
        if features is not None:
            _check_features(features)
            self.features[cal_id] = features
        else:
            self.features.pop(cal_id, None)
        self.widths.discard(cal_id)
        if base.get("metric") == "interval_width":
            self.widths.add(cal_id)
        self.events["calibration"] += 1

    def finish(self) -> None:
        """Fold the signature counts and buffered values into the windows."""
        self.flush()
        for (key, tier, action, cal, _batch), count in self.signatures.items():
            w = self.window(key)
            w.n += count
            w.tiers[tier] += count
            w.actions[action] += count
            w.ids[cal] += count
            self.tier_action.setdefault(tier, action)


_Fold = Callable[[Aggregator, list[bytes], str, int], int | None]

#: ``engine`` values: column-wise blocks when msgspec is installed, or always line by line.
ENGINES = ("auto", "blocks", "lines")


def _block_folder(engine: str) -> _Fold | None:
    """The column-wise block reader for ``engine`` (``None``: line by line)."""
    if engine not in ENGINES:
        raise ConfigError(
            f"engine must be one of {', '.join(map(repr, ENGINES))}; got {engine!r}. Use "
            "'auto' (column-wise when msgspec is installed) or 'lines' (line by line)."
        )
    if engine == "lines":
        return None
    try:
        from safepredict.monitoring.fast_blocks import fold_block
    except ImportError as exc:
        if engine == "blocks":
            raise MissingExtraError(
                f"engine='blocks' needs msgspec ({exc.name} is missing): pip install "
                "'safepredict[fast]', or use engine='auto' to read line by line without it."
            ) from exc
        return None
    return fold_block


def _float(v: Any) -> float:
    """A logged input value as a number (``nan`` when missing or not numeric)."""
    if type(v) is float or type(v) is int:
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _check_features(features: Any) -> None:
    """Raise ``TypeError`` unless ``features`` is a per-feature bins snapshot."""
    columns = features.get("columns") if type(features) is dict else None
    if type(columns) is not dict or not all(
        type(c) is dict
        and type(c.get("edges")) is list
        and all(map(_number, c["edges"]))
        and type(c.get("counts")) is list
        and len(c["counts"]) == len(c["edges"]) + 1
        and all(type(k) is int for k in c["counts"])
        and type(c.get("missing")) is int
        and type(c.get("n")) is int
        for c in columns.values()
    ):
        raise TypeError("baseline 'features' must map columns to edges, counts, missing and n")


def _width(conformal: Any) -> float | None:
    """The interval width (10 significant digits, as in the calibration snapshot)."""
    iv = conformal.get("interval") if type(conformal) is dict else None
    if type(iv) is not list or len(iv) != 2 or not (_number(iv[0]) and _number(iv[1])):
        return None
    return float(f"{iv[1] - iv[0]:.10g}")


def policy_tiers(cal: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Tier name -> tier dict of a calibration record's policy (empty without one)."""
    if not cal:
        return {}
    return {t["name"]: t for t in cal.get("policy", {}).get("tiers", [])}


def _score(
    per_tier: dict[str, Outcome],
    tier: str,
    ev: Mapping[str, Any],
    y: Any,
    cal: Mapping[str, Any] | None,
    journal: bool = False,
) -> int | None:
    """Count a joined outcome for ``tier``; return its error (0/1), None when unscored.

    With ``journal`` (a worker process), the absolute errors are kept in file order.
    """
    o = per_tier.get(tier)
    if o is None:
        o = per_tier[tier] = Outcome(terms=[] if journal else None)
    o.n += 1
    pred = ev.get("prediction")
    regression = (cal or {}).get("task") == "regression" or (
        ev.get("probabilities") is None and (ev.get("conformal") or {}).get("interval") is not None
    )
    if not regression:
        err = int(not _same(pred, y))
    else:
        a, b = _as_number(pred), _as_number(y)
        if a is None or b is None:
            err = 1
        else:
            o.abs_err_sum += abs(a - b)
            if o.terms is not None:
                o.terms.append(abs(a - b))
            tolerance = policy_tiers(cal).get(tier, {}).get("tolerance")
            if tolerance is None:
                return None
            err = int(abs(a - b) > float(tolerance))
    o.scored += 1
    o.errors += err
    return err
