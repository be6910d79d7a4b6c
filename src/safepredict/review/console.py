"""Reviewer console: a small web app where humans work the SQLite review queue (layer 4).

Server-rendered HTML (Starlette + Jinja2, no front-end build step) over
:class:`~safepredict.review.SQLiteReviewQueue`. Start it with
``safepredict review serve --queue reviews.db``.

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
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from safepredict._stats import clopper_pearson
from safepredict.exceptions import SafePredictError
from safepredict.reasons import describe_reason as describe_reason  # moved to reasons
from safepredict.review import SQLiteReviewQueue

__all__ = ["TOKEN_ENV", "create_app", "realized_error"]

#: Environment variable the token is read from when ``--token`` is not given.
TOKEN_ENV = "SAFEPREDICT_REVIEW_TOKEN"


def realized_error(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Error rate of resolved cases (prediction != outcome) with a 95% Clopper-Pearson interval.

    Examples
    --------
    >>> r = realized_error([{"prediction": 1, "outcome": 1}, {"prediction": 0, "outcome": 1}])
    >>> r["n"], r["errors"], round(r["rate"], 2)
    (2, 1, 0.5)
    """
    n = len(cases)
    errors = sum(1 for c in cases if c.get("prediction") != c.get("outcome"))
    if n == 0:
        return {"n": 0, "errors": 0, "rate": None, "low": None, "high": None}
    low, high = clopper_pearson(errors, n, 0.95, two_sided=True)
    return {"n": n, "errors": errors, "rate": errors / n, "low": low, "high": high}


def _parse_outcome(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _bars(explanation: Any) -> list[dict[str, Any]]:
    """Top contributions as bar geometry (percent of the largest magnitude)."""
    if not isinstance(explanation, dict):
        return []
    top = [(str(f), float(v)) for f, v in explanation.get("top") or [] if v is not None]
    biggest = max((abs(v) for _, v in top), default=0.0) or 1.0
    return [
        {"feature": f, "value": v, "width": round(100 * abs(v) / biggest, 1), "positive": v >= 0}
        for f, v in top
        if math.isfinite(v)
    ]


class _Console:
    def __init__(self, queue: SQLiteReviewQueue, token: str) -> None:
        self.queue = queue
        self.token = token
        self.env = Environment(
            loader=PackageLoader("safepredict.review", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )

    # ------------------------------------------------------------ helpers
    def authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        given = given or request.cookies.get("sp_token") or request.query_params.get("token")
        return bool(given) and hmac.compare_digest(str(given), self.token)

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        csrf = request.cookies.get("sp_csrf") or secrets.token_urlsafe(24)
        template = self.env.get_template(name)
        html = template.render(
            reviewer=request.cookies.get("sp_reviewer", ""),
            csrf=csrf,
            stats=self.stats(),
            **ctx,
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get("sp_csrf") != csrf:
            response.set_cookie("sp_csrf", csrf, httponly=True, samesite="strict")
        return response

    def stats(self) -> dict[str, Any]:
        counts = self.queue.counts()
        today = datetime.now(UTC).date().isoformat()
        resolved = list(self.queue.outcomes())
        audited = [c for c in resolved if c.get("audit") and c.get("action") == "accept"]
        return {
            "pending": counts["*"]["pending"],
            "claimed": counts["*"]["claimed"],
            "resolved_today": sum(1 for c in resolved if str(c.get("resolved_at", "")) >= today),
            "audit": realized_error(audited),
            "tiers": {t: c for t, c in counts.items() if t != "*"},
        }

    async def check_post(self, request: Request) -> dict[str, str] | Response:
        form = await request.form()
        data = {k: str(v) for k, v in form.items()}
        cookie = request.cookies.get("sp_csrf", "")
        if not cookie or not hmac.compare_digest(data.get("csrf", ""), cookie):
            return HTMLResponse(
                "403 Forbidden: missing or stale CSRF token; reload the page and try again.",
                status_code=403,
            )
        return data

    # ------------------------------------------------------------ pages
    async def index(self, request: Request) -> Response:
        tier = request.query_params.get("tier") or None
        reason = request.query_params.get("reason") or None
        age = request.query_params.get("min_age_minutes") or ""
        older = None
        if age:
            try:
                older = timedelta(minutes=float(age))
            except ValueError:
                return self.render(
                    request,
                    "console_list.html",
                    status=400,
                    cases=[],
                    error=f"min_age_minutes must be a number; got {age!r}.",
                    filters={"tier": tier, "reason": reason, "min_age_minutes": age},
                )
        cases = self.queue.pending(200, tier=tier, reason=reason, older_than=older)
        return self.render(
            request,
            "console_list.html",
            cases=cases,
            error=None,
            filters={"tier": tier or "", "reason": reason or "", "min_age_minutes": age},
        )

    async def case(self, request: Request) -> Response:
        decision_id = request.path_params["decision_id"]
        case = self.queue.get(decision_id)
        if case is None:
            return self.render(
                request,
                "console_list.html",
                status=404,
                cases=[],
                error=f"No case {decision_id!r} in the queue.",
                filters={},
            )
        return self.render(
            request,
            "console_case.html",
            case=case,
            reasons=[(r, describe_reason(r)) for r in case.get("reasons") or []],
            bars=_bars(case.get("explanation")),
            inputs=case.get("inputs"),
            error=request.query_params.get("error"),
        )

    async def set_reviewer(self, request: Request) -> Response:
        data = await self.check_post(request)
        if isinstance(data, Response):
            return data
        name = data.get("reviewer", "").strip()
        response = RedirectResponse(data.get("next") or "/", status_code=303)
        if name:
            response.set_cookie("sp_reviewer", name, httponly=True, samesite="strict")
        return response

    def _reviewer(self, request: Request) -> str | None:
        name = request.cookies.get("sp_reviewer", "").strip()
        return name or None

    async def _reviewer_post(self, request: Request) -> tuple[dict[str, str], str] | Response:
        """The form of a CSRF-checked POST and its reviewer, or the response refusing it."""
        data = await self.check_post(request)
        if isinstance(data, Response):
            return data
        reviewer = self._reviewer(request)
        if reviewer is None:
            return RedirectResponse("/?" + urlencode({"need": "reviewer"}), status_code=303)
        return data, reviewer

    async def claim_next(self, request: Request) -> Response:
        checked = await self._reviewer_post(request)
        if isinstance(checked, Response):
            return checked
        data, reviewer = checked
        case = self.queue.claim(reviewer, tier=data.get("tier") or None)
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
            self.queue.claim_case(decision_id, reviewer)
        except SafePredictError as exc:
            return _back(decision_id, str(exc))
        return RedirectResponse(f"/case/{_quote(decision_id)}", status_code=303)

    async def resolve(self, request: Request) -> Response:
        checked = await self._reviewer_post(request)
        if isinstance(checked, Response):
            return checked
        data, reviewer = checked
        decision_id = request.path_params["decision_id"]
        outcome_text = data.get("outcome", "").strip()
        if not outcome_text:
            return _back(decision_id, "Enter the outcome (e.g. the true label) before resolving.")
        try:
            self.queue.resolve(
                decision_id, _parse_outcome(outcome_text), reviewer, data.get("note") or None
            )
        except SafePredictError as exc:
            return _back(decision_id, str(exc))
        if data.get("next") == "1":  # resolve and move on in one submit
            nxt = self.queue.claim(reviewer)
            if nxt is not None:
                return RedirectResponse(f"/case/{_quote(nxt['decision_id'])}", status_code=303)
        return RedirectResponse("/", status_code=303)


def _quote(decision_id: str) -> str:
    from urllib.parse import quote

    return quote(str(decision_id), safe="")


def _back(decision_id: str, error: str) -> Response:
    return RedirectResponse(
        f"/case/{_quote(decision_id)}?" + urlencode({"error": error}), status_code=303
    )


def create_app(queue: SQLiteReviewQueue | str | Path, token: str) -> Starlette:
    """Build the console's ASGI app over a review queue.

    Parameters
    ----------
    queue : SQLiteReviewQueue or path
        The queue (a path opens it).
    token : str
        Access token every request must carry.

    Returns
    -------
    starlette.applications.Starlette
        The app; serve it with uvicorn.

    Examples
    --------
    >>> import tempfile
    >>> app = create_app(tempfile.mkdtemp() + "/q.db", token="s3cret-token")
    >>> sorted(r.path for r in app.routes)[:2]
    ['/', '/case/{decision_id:path}']
    """
    if not isinstance(token, str) or len(token) < 8:
        raise ValueError("the console token must be a string of at least 8 characters.")
    q = queue if isinstance(queue, SQLiteReviewQueue) else SQLiteReviewQueue(queue)
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
                params = {k: v for k, v in request.query_params.items() if k != "token"}
                target = request.url.path + ("?" + urlencode(params) if params else "")
                response: Response = RedirectResponse(target, status_code=303)
                response.set_cookie("sp_token", token, httponly=True, samesite="strict")
                reviewer = request.query_params.get("reviewer")
                if reviewer:
                    response.set_cookie("sp_reviewer", reviewer, httponly=True, samesite="strict")
                return response
            result: Response = await endpoint(request)
            return result

        return wrapper

    routes = [
        Route("/", guarded(console.index), methods=["GET"]),
        Route("/case/{decision_id:path}/claim", guarded(console.claim_case), methods=["POST"]),
        Route("/case/{decision_id:path}/resolve", guarded(console.resolve), methods=["POST"]),
        Route("/case/{decision_id:path}", guarded(console.case), methods=["GET"]),
        Route("/claim", guarded(console.claim_next), methods=["POST"]),
        Route("/reviewer", guarded(console.set_reviewer), methods=["POST"]),
    ]
    return Starlette(routes=routes)
