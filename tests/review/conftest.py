"""Review queue backends for parametrized tests: SQLite files and a throwaway PostgreSQL.

The PostgreSQL fixture starts its own cluster (initdb into a temporary directory,
``pg_ctl`` on a free port with its unix socket there), one schema per test, and
stops it at teardown. As root it runs the server as the ``postgres`` user
(initdb refuses root). It skips only when no PostgreSQL binaries are installed.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from safepredict.review import PostgresReviewQueue, SQLiteReviewQueue
from safepredict.review._codec import parse_time
from safepredict.review._core import ReviewQueueCore

BACKENDS = ("sqlite", "postgres")
# A lease that must stay live across a few queue calls: long enough that a loaded CI
# machine's stalls (xdist neighbours starting a JVM) cannot expire it between two calls.
# Tests then wait for the real expiry with sleep_past, not a fixed sleep.
LIVE_TTL = 2.0


def sleep_past(moment: str) -> None:
    """Sleep until just after the stored ISO ``moment`` (a lease expiry)."""
    left = (parse_time(moment) - datetime.now(UTC)).total_seconds()
    time.sleep(max(0.0, left) + 0.05)


def postgres_bin() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A running throwaway PostgreSQL; yields the base dsn (database ``postgres``)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL binaries not found (initdb, pg_ctl): apt-get install postgresql "
            "(Debian) to run the PostgreSQL review queue tests"
        )
    root = Path(tempfile.mkdtemp(prefix="sp-pg-"))
    data = root / "data"
    as_user: list[str] = []
    user = getpass.getuser()
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        user = "postgres"
        shutil.chown(root, "postgres")
    port = _free_port()
    run = {"check": True, "capture_output": True}
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user], **run
    )
    options = f"-p {port} -k {root} -c listen_addresses='' -c fsync=off -c max_connections=60"
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(root / "log"),
            "start",
        ],
        **run,
    )
    try:
        yield f"postgresql://{user}@/postgres?host={quote(str(root))}&port={port}"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


_schemas = itertools.count()


@pytest.fixture
def postgres_dsn(postgres_server: str) -> str:
    """A dsn whose search_path is a new, empty schema (one per test)."""
    import psycopg

    name = f"t{os.getpid()}_{next(_schemas)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{postgres_server}&options={quote(f'-csearch_path={name}')}"


@pytest.fixture(params=BACKENDS)
def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ReviewQueueCore]]:
    """``make_queue(**kw)``: a new queue of the parametrized backend (same store each call)."""
    made: list[ReviewQueueCore] = []
    if request.param == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")

        def factory(**kw: Any) -> ReviewQueueCore:
            made.append(PostgresReviewQueue(dsn, **kw))
            return made[-1]
    else:

        def factory(**kw: Any) -> ReviewQueueCore:
            made.append(SQLiteReviewQueue(tmp_path / "reviews.db", **kw))
            return made[-1]

    yield factory
    for q in made:
        with contextlib.suppress(Exception):
            q.close()  # type: ignore[attr-defined]  # both backends have close()
