"""Reviewer console: a small web app where humans work the review queue (layer 4).

Server-rendered HTML (Starlette + Jinja2, no front-end build step) over a
:class:`~safepredict.review.SQLiteReviewQueue` or
:class:`~safepredict.review.PostgresReviewQueue`. Start it with
``safepredict review serve --queue reviews.db``. A claimed case shows its lease
countdown; a resolved case that needed several reviewers shows who answered
what; ``/stats`` shows service levels and reviewer agreement.

Security model
--------------
- Binds to 127.0.0.1 unless told otherwise.
- Every page and action needs the access token: ``Authorization: Bearer <token>``,
  or the ``sp_token`` cookie set when the URL printed at start-up
  (``/?token=...``) is opened. Anything else gets 401.
- Write actions are POST only and carry a CSRF token (double submit: a hidden form
  field that must equal the ``sp_csrf`` cookie); cookies are ``HttpOnly`` and
  ``SameSite=Strict``.
- Everything from the queue is HTML-escaped by Jinja2's autoescaping.
- A reviewer can only resolve a case they claimed (enforced by the queue).
- Whatever a client sends (any header, cookie, query, body or encoding) gets a
  2xx, 3xx or 4xx answer; redirects go only to same-site relative paths.
- Outcomes are checked on the server against the model's labels (or must be a
  finite number for regression); a refused outcome comes back with the choices.
- SQLite work runs in a worker thread, never on the event loop; every page reads
  O(tiers) counters kept by the queue, not the resolved cases.
"""

from __future__ import annotations

import hmac
import math
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from safepredict._extras import missing_extra

try:
    from jinja2 import Environment, PackageLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route
except ImportError as _exc:  # the optional 'review' extra
    raise missing_extra(_exc, "review", "the reviewer console") from _exc

from safepredict._binomial import clopper_pearson
from safepredict.exceptions import (
    CaseNotFoundError,
    ConfigError,
    InvalidOutcomeError,
    QueueCorruptError,
    QueueFullError,
    QueueLockedError,
    QueueReadOnlyError,
    QueueVersionError,
    SafePredictError,
)
from safepredict.reasons import describe_reason
from safepredict.review import PostgresReviewQueue, SQLiteReviewQueue
from safepredict.review._core import ReviewQueueCore
from safepredict.review.outcomes import OutcomeSpace, check_outcome, parse_outcome

__all__ = ["TOKEN_ENV", "create_app", "describe_tier", "realized_error"]

#: Environment variable the token is read from when ``--token`` is not given.
TOKEN_ENV = "SAFEPREDICT_REVIEW_TOKEN"


def describe_tier(tier: str, action: str, tiers: Sequence[Mapping[str, Any]] | None) -> str:
    """Why a row landed in ``tier``, worded from the tier policy's rules.

    Tiers are tried in order and a row takes the first whose conditions it meets,
    so a row in ``tier`` missed every earlier tier's rule (and met this one's).

    Examples
    --------
    >>> tiers = [{"name": "auto", "action": "accept", "min_confidence": 0.95},
    ...          {"name": "review", "action": "review"}]
    >>> describe_tier("review", "review", tiers)
    "Tier 'review' (review): it did not meet tier 'auto' (needs confidence >= 0.95)."
    >>> describe_tier("human", "abstain", None)
    "Tier 'human' (abstain): routed there by the tier policy."
    """
    head = f"Tier {tier!r} ({action})"
    names = [t.get("name") for t in tiers or ()]
    if not tiers or tier not in names:
        return f"{head}: routed there by the tier policy."
    here = names.index(tier)
    missed = [
        f"tier {t.get('name')!r} (needs {_rule(t)})" for t in tiers[:here] if _rule(t) is not None
    ]
    own = _rule(tiers[here])
    parts = []
    if missed:
        parts.append("it did not meet " + "; nor ".join(missed))
    if own is not None:
        parts.append(f"it met this tier's rule ({own})")
    if not parts:
        parts.append("the first tier of the policy")
    return f"{head}: " + ", and ".join(parts) + "."


_CONDITION_WORDS = {
    "min_confidence": "confidence >= {v}",
    "max_set_size": "a prediction set of at most {v} label(s)",
    "max_interval_width": "an interval at most {v} wide",
    "max_error": "a certified error rate <= {v}",
}


def _rule(tier: Mapping[str, Any]) -> str | None:
    words = [w.format(v=tier[k]) for k, w in _CONDITION_WORDS.items() if tier.get(k) is not None]
    return " and ".join(words) if words else None


def realized_error(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Error rate of resolved cases (prediction != outcome) with a 95% Clopper-Pearson interval.

    Examples
    --------
    >>> r = realized_error([{"prediction": 1, "outcome": 1}, {"prediction": 0, "outcome": 1}])
    >>> r["n"], r["errors"], round(r["rate"], 2)
    (2, 1, 0.5)
    """
    errors = sum(1 for c in cases if c.get("prediction") != c.get("outcome"))
    return _error_rate(len(cases), errors)


def _error_rate(n: int, errors: int) -> dict[str, Any]:
    if n <= 0:
        return {"n": 0, "errors": 0, "rate": None, "low": None, "high": None}
    errors = min(max(errors, 0), n)
    low, high = clopper_pearson(errors, n, 0.95, two_sided=True)
    return {"n": n, "errors": errors, "rate": errors / n, "low": low, "high": high}


def _bars(explanation: Any) -> list[dict[str, Any]]:
    """Top contributions as bar geometry (percent of the largest magnitude)."""
    if not isinstance(explanation, dict):
        return []
    top: list[tuple[str, float]] = []
    for item in explanation.get("top") or []:
        if not isinstance(item, list | tuple) or len(item) != 2:
            continue
        f, v = item
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            top.append((str(f), float(v)))
    biggest = max((abs(v) for _, v in top), default=0.0) or 1.0
    return [
        {"feature": f, "value": v, "width": round(100 * abs(v) / biggest, 1), "positive": v >= 0}
        for f, v in top
    ]


#: Longest reviewer name kept (characters).
MAX_REVIEWER = 80
#: Largest form body read (bytes); a bigger POST is refused with 413.
MAX_FORM_BYTES = 64 * 1024
_INFRA = (QueueLockedError, QueueReadOnlyError, QueueFullError, QueueCorruptError)


def _clean_name(value: str | None) -> str | None:
    """A reviewer name in any script, without control characters; None if empty or too long."""
    if value is None:
        return None
    name = "".join(c for c in value if unicodedata.category(c)[0] != "C").strip()
    if not name or len(name) > MAX_REVIEWER:
        return None
    return name


def _safe_next(value: str | None) -> str:
    r"""``value`` if it is a same-site relative path (``/...``), else ``/``.

    Examples
    --------
    >>> _safe_next("/case/d-1"), _safe_next("https://evil.example"), _safe_next("//evil")
    ('/case/d-1', '/', '/')
    >>> _safe_next("/\\evil"), _safe_next(None)
    ('/', '/')
    """
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(c in value for c in "\\\r\n\t") or any(unicodedata.category(c)[0] == "C" for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def _quote(decision_id: str) -> str:
    return quote(str(decision_id), safe="")


def _back(decision_id: str, error: str) -> Response:
    return RedirectResponse(
        f"/case/{_quote(decision_id)}?" + urlencode({"error": error[:500]}), status_code=303
    )


def _text(message: str, status: int) -> Response:
    return HTMLResponse(f"<p>{_escape(message)}</p>", status_code=status)


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


class _Console:
    def __init__(self, queue: ReviewQueueCore, token: str) -> None:
        self.queue = queue
        self.token = token.encode("utf-8")
        self.env = Environment(
            loader=PackageLoader("safepredict.review", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )

    # ------------------------------------------------------------ helpers
    def authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        given = header[7:] if header[:7].lower() == "bearer " else None
        given = given or request.cookies.get("sp_token") or request.query_params.get("token")
        if not given:
            return False
        # bytes, so a token in any script compares (str compare_digest wants ASCII)
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self.token)

    def reviewer(self, request: Request) -> str | None:
        return _clean_name(unquote(request.cookies.get("sp_reviewer", "")))

    def stats(self) -> dict[str, Any]:
        """Header numbers: O(tiers) counters kept by the queue (call in a worker thread)."""
        summary = self.queue.summary()
        counts = summary["counts"]
        return {
            "pending": counts["*"]["pending"],
            "claimed": counts["*"]["claimed"],
            "resolved_today": summary["resolved_today"],
            "audit": _error_rate(summary["audit_n"], summary["audit_errors"]),
            "tiers": {t: c for t, c in counts.items() if t != "*"},
        }

    def render(
        self, request: Request, name: str, stats: dict[str, Any], status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        csrf = request.cookies.get("sp_csrf") or ""
        if not (
            16 <= len(csrf) <= 64
            and csrf.isascii()
            and csrf.replace("-", "").replace("_", "").isalnum()
        ):
            csrf = secrets.token_urlsafe(24)
        html = self.env.get_template(name).render(
            reviewer=self.reviewer(request) or "", csrf=csrf, stats=stats, **ctx
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get("sp_csrf") != csrf:
            response.set_cookie("sp_csrf", csrf, httponly=True, samesite="strict")
        return response

    async def form(self, request: Request) -> dict[str, str] | Response:
        """The CSRF-checked form of a POST, or the 4xx response refusing it."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
            return _text(f"Forms are limited to {MAX_FORM_BYTES} bytes.", 413)
        try:
            form = await request.form(max_files=0, max_fields=50, max_part_size=MAX_FORM_BYTES)
            data = {k: v for k, v in form.items() if isinstance(v, str)}
        except Exception:  # any unparsable body (bad multipart, bad encoding) is the client's
            return _text("Unreadable form body; submit the page's own form.", 400)
        cookie = request.cookies.get("sp_csrf", "")
        given = data.get("csrf", "")
        if not cookie or not hmac.compare_digest(
            given.encode("utf-8", "surrogatepass"), cookie.encode("utf-8", "surrogatepass")
        ):
            return _text(
                "403 Forbidden: missing or stale CSRF token; reload the page and try again.", 403
            )
        return data

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run queue work in a worker thread (SQLite blocks; the event loop must not)."""
        return await run_in_threadpool(fn, *args, **kwargs)

    # ------------------------------------------------------------ pages
    async def index(self, request: Request) -> Response:
        params = request.query_params
        tier = params.get("tier") or None
        reason = params.get("reason") or None
        age = params.get("min_age_minutes") or ""
        filters = {"tier": tier or "", "reason": reason or "", "min_age_minutes": age}
        older: float | None = None
        error = None
        if age:
            try:
                minutes = float(age)
            except ValueError:
                minutes = math.nan
            if not math.isfinite(minutes) or minutes < 0:
                error = f"min_age_minutes must be a finite number >= 0; got {age[:40]!r}."
            else:
                older = min(minutes, 1e300) * 60.0  # beyond the calendar matches nothing

        def load() -> tuple[list[dict[str, Any]], dict[str, Any]]:
            cases = [] if error else self.queue.pending(200, tier, reason, older)
            return cases, self.stats()

        cases, stats = await self.call(load)
        return self.render(
            request,
            "console_list.html",
            stats,
            status=400 if error else 200,
            cases=cases,
            error=error,
            filters=filters,
            need=params.get("need"),
        )

    async def case(self, request: Request) -> Response:
        decision_id = request.path_params["decision_id"]

        def load() -> tuple[Any, ...]:
            case = self.queue.get(decision_id)
            answers = []  # who answered what: shown once resolved, so it cannot anchor anyone
            if case is not None and case["status"] == "resolved":
                answers = self.queue.reviews(decision_id)
            return (case, self.stats(), self.queue.outcome_space(), self.queue.tiers(), answers)

        case, stats, space, tiers, answers = await self.call(load)
        if case is None:
            return self.render(
                request,
                "console_list.html",
                stats,
                status=404,
                cases=[],
                error=f"No case {decision_id[:200]!r} in the queue.",
                filters={},
            )
        reasons = case.get("reasons") if isinstance(case.get("reasons"), list) else []
        return self.render(
            request,
            "console_case.html",
            stats,
            case=case,
            reasons=[(str(r), describe_reason(str(r))) for r in reasons],
            why=describe_tier(str(case.get("tier")), str(case.get("action")), tiers),
            bars=_bars(case.get("explanation")),
            inputs=case.get("inputs") if isinstance(case.get("inputs"), dict) else None,
            labels=_labels(space),
            numeric=space is not None and space.task == "regression",
            error=request.query_params.get("error", "")[:500] or None,
            answers=answers if len(answers) > 1 else [],
            lease_left=_seconds_left(case.get("lease_expires_at")),
        )

    async def stats_page(self, request: Request) -> Response:
        def load() -> tuple[Any, ...]:
            return self.stats(), self.queue.counts(sla=True), self.queue.reviewer_stats()

        stats, sla, people = await self.call(load)
        tiers = sorted(sla.items(), key=lambda kv: (kv[0] == "*", kv[0]))
        return self.render(request, "console_stats.html", stats, sla=tiers, people=people)

    async def set_reviewer(self, request: Request) -> Response:
        data = await self.form(request)
        if isinstance(data, Response):
            return data
        name = _clean_name(data.get("reviewer"))
        response = RedirectResponse(_safe_next(data.get("next")), status_code=303)
        if name:
            _set_reviewer_cookie(response, name)
        return response

    async def _reviewer_post(self, request: Request) -> tuple[dict[str, str], str] | Response:
        """The form of a CSRF-checked POST and its reviewer, or the response refusing it."""
        data = await self.form(request)
        if isinstance(data, Response):
            return data
        reviewer = self.reviewer(request)
        if reviewer is None:
            return RedirectResponse("/?" + urlencode({"need": "reviewer"}), status_code=303)
        return data, reviewer

    async def claim_next(self, request: Request) -> Response:
        checked = await self._reviewer_post(request)
        if isinstance(checked, Response):
            return checked
        data, reviewer = checked
        case = await self.call(self.queue.claim, reviewer, data.get("tier") or None)
        if case is None:
            return RedirectResponse("/?" + urlencode({"empty": "1"}), status_code=303)
        return RedirectResponse(f"/case/{_quote(case['decision_id'])}", status_code=303)

    async def claim_case(self, request: Request) -> Response:
        checked = await self._reviewer_post(request)
        if isinstance(checked, Response):
            return checked
        reviewer = checked[1]
        decision_id = request.path_params["decision_id"]
        try:
            await self.call(self.queue.claim_case, decision_id, reviewer)
        except CaseNotFoundError as exc:
            return _text(str(exc), 404)
        except SafePredictError as exc:
            if isinstance(exc, _INFRA):
                raise
            return _back(decision_id, str(exc))
        return RedirectResponse(f"/case/{_quote(decision_id)}", status_code=303)

    async def resolve(self, request: Request) -> Response:
        checked = await self._reviewer_post(request)
        if isinstance(checked, Response):
            return checked
        data, reviewer = checked
        decision_id = request.path_params["decision_id"]
        text = data.get("outcome", "").strip()
        if not text:
            return _back(decision_id, "Enter the outcome (e.g. the true label) before resolving.")
        note = data.get("note") or None

        def work() -> dict[str, Any] | None:
            outcome = check_outcome(parse_outcome(text), self.queue.outcome_space())
            self.queue.resolve(decision_id, outcome, reviewer, note)
            return self.queue.claim(reviewer) if data.get("next") == "1" else None

        try:
            nxt = await self.call(work)
        except CaseNotFoundError as exc:
            return _text(str(exc), 404)
        except SafePredictError as exc:
            if isinstance(exc, _INFRA):
                raise
            return _back(decision_id, str(exc))
        if nxt is not None:
            return RedirectResponse(f"/case/{_quote(nxt['decision_id'])}", status_code=303)
        return RedirectResponse("/", status_code=303)


def _seconds_left(expires: Any) -> int | None:
    """Whole seconds until a lease expires (0 once past), or None without a lease."""
    if not isinstance(expires, str):
        return None
    try:
        moment = datetime.fromisoformat(expires)
    except ValueError:
        return None
    return max(0, int((moment - datetime.now(UTC)).total_seconds()))


def _labels(space: OutcomeSpace | None) -> list[tuple[str, str]] | None:
    """(value, text) options for the outcome control, or None for a free field."""
    if space is None or space.task != "classification" or space.labels is None:
        return None
    return [(str(v), str(v)) for v in space.labels]


def _set_reviewer_cookie(response: Response, name: str) -> None:
    # percent-encoded UTF-8: a cookie header is latin-1, a name may be in any script
    response.set_cookie("sp_reviewer", quote(name, safe=""), httponly=True, samesite="strict")


def create_app(queue: ReviewQueueCore | str | Path, token: str) -> Starlette:
    """Build the console's ASGI app over a review queue.

    Parameters
    ----------
    queue : SQLiteReviewQueue, PostgresReviewQueue, path or postgresql:// URL
        The queue (a path or URL opens it).
    token : str
        Access token every request must carry (at least 8 characters).

    Returns
    -------
    starlette.applications.Starlette
        The app; serve it with uvicorn.

    Raises
    ------
    ConfigError
        If the token is not a string of at least 8 characters.

    Examples
    --------
    >>> import tempfile
    >>> app = create_app(tempfile.mkdtemp() + "/q.db", token="s3cret-token")
    >>> sorted(r.path for r in app.routes)[:2]
    ['/', '/case/{decision_id:path}']
    """
    if not isinstance(token, str) or len(token) < 8:
        raise ConfigError(
            "the console token must be a string of at least 8 characters; got "
            f"{type(token).__name__} of length {len(token) if isinstance(token, str) else 0}."
        )
    if isinstance(queue, ReviewQueueCore):
        q: ReviewQueueCore = queue
    elif isinstance(queue, str) and queue.lower().startswith(("postgresql://", "postgres://")):
        q = PostgresReviewQueue(queue)
    else:
        q = SQLiteReviewQueue(queue)
    console = _Console(q, token)

    def guarded(endpoint: Any) -> Any:
        async def wrapper(request: Request) -> Response:
            if not console.authorized(request):
                return HTMLResponse(
                    "<h1>401 Unauthorized</h1><p>Open the URL printed by "
                    "<code>safepredict review serve</code> (it carries ?token=...), or send "
                    "<code>Authorization: Bearer &lt;token&gt;</code>.</p>",
                    status_code=401,
                )
            if request.method == "GET" and "token" in request.query_params:
                params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                params = [(k, v) for k, v in params if k != "reviewer"]
                path = quote(request.url.path, safe="/:@!$&'()*+,;=-._~")
                target = path + ("?" + urlencode(params) if params else "")
                response: Response = RedirectResponse(_safe_next(target), status_code=303)
                response.set_cookie("sp_token", token, httponly=True, samesite="strict")
                reviewer = _clean_name(request.query_params.get("reviewer"))
                if reviewer:
                    _set_reviewer_cookie(response, reviewer)
                return response
            try:
                result: Response = await endpoint(request)
            except _INFRA as exc:  # the queue file, not the request: say so, retry later
                return _text(str(exc), 503)
            except QueueVersionError as exc:
                return _text(str(exc), 503)
            except InvalidOutcomeError as exc:  # pragma: no cover - caught per endpoint
                return _text(str(exc), 400)
            return result

        return wrapper

    routes = [
        Route("/", guarded(console.index), methods=["GET"]),
        Route("/case/{decision_id:path}/claim", guarded(console.claim_case), methods=["POST"]),
        Route("/case/{decision_id:path}/resolve", guarded(console.resolve), methods=["POST"]),
        Route("/case/{decision_id:path}", guarded(console.case), methods=["GET"]),
        Route("/stats", guarded(console.stats_page), methods=["GET"]),
        Route("/claim", guarded(console.claim_next), methods=["POST"]),
        Route("/reviewer", guarded(console.set_reviewer), methods=["POST"]),
    ]
    return Starlette(routes=routes)
