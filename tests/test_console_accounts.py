"""Console accounts: pure policies (roles, scopes, lock-out, session expiry), the credentials
(scrypt, RFC 6238 vectors) and the store, with an injected clock: on SQLite (embedded) and on
PostgreSQL (cluster), where two receivers share sessions, one lock-out count and the used
one-time codes."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.csu.console import OperatorStore, Permission, Role, Scope
from edge.csu.console.alerts import SqliteDecisions
from edge.csu.console.credentials import (
    check_password,
    hash_password,
    match_totp,
    new_totp_secret,
    totp_at,
    totp_step,
)
from edge.csu.console.pgconsole import PgDecisions, PgOperatorStore
from edge.csu.console.roles import LockoutPolicy, SessionPolicy, allows
from edge.csu.console.stores import decision_log, operator_store
from edge.csu.receiver.settings import ServeConfig
from edge.errors import ConfigError

from .pg_util import ConsoleDb
from .test_csu_pgindex import _cluster_store
from .uplink_util import free_port, make_csu

RFC6238_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # b"12345678901234567890" in base32
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_totp_matches_the_rfc_6238_vectors() -> None:
    # RFC 6238 appendix B (SHA-1), last six digits of the eight-digit values
    for t, code in ((59, "287082"), (1111111109, "081804"), (1234567890, "005924")):
        assert totp_at(RFC6238_SECRET, totp_step(t)) == code


def test_totp_accepts_one_step_of_drift_and_never_the_same_code_twice() -> None:
    secret = new_totp_secret()
    now = 1_800_000_015.0
    step = totp_step(now)
    assert match_totp(secret, totp_at(secret, step - 1), now, 0) == step - 1
    assert match_totp(secret, totp_at(secret, step + 1), now, 0) == step + 1
    assert match_totp(secret, totp_at(secret, step - 2), now, 0) is None
    assert match_totp(secret, totp_at(secret, step), now, last_step=step) is None
    assert match_totp(secret, "12345", now, 0) is None


def test_scrypt_hashes_carry_their_parameters_and_refuse_a_wrong_password() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$32768$8$1$")
    assert check_password(PASSWORD, stored)
    assert not check_password(PASSWORD + "!", stored)
    assert hash_password(PASSWORD) != stored  # salted
    assert not check_password(PASSWORD, "scrypt$garbage")


def test_roles_grow_and_scopes_limit_cameras() -> None:
    assert allows(Role.VIEWER, Permission.VIEW) and not allows(Role.VIEWER, Permission.EXPORT)
    assert allows(Role.VIEWER, Permission.DECIDE)  # the agents at the wall decide
    assert allows(Role.INVESTIGATOR, Permission.EXPORT)
    assert not allows(Role.INVESTIGATOR, Permission.AUDIT)
    assert allows(Role.SUPERVISOR, Permission.AUDIT)
    assert not allows(Role.SUPERVISOR, Permission.MANAGE)
    assert all(allows(Role.ADMIN, p) for p in Permission)
    scope = Scope.parse("unit-a/street, unit-b")
    assert scope.allows_camera("unit-a", "street") and not scope.allows_camera("unit-a", "door")
    assert scope.allows_camera("unit-b", "anything") and scope.allows_unit("unit-a")
    assert not scope.allows_unit("unit-c") and not scope.allows_camera("unit-ab", "street")
    assert Scope.parse("").everything and Scope().allows_camera("x", "y")
    with pytest.raises(ValueError, match="UNIT or UNIT/CAMERA"):
        Scope.parse("unit-a/street/extra")


def test_lockout_and_session_policies() -> None:
    lock = LockoutPolicy(max_failures=3, lock_s=60)
    assert lock.locked_until(2, 100.0) is None and lock.locked_until(3, 100.0) == 160.0
    sessions = SessionPolicy(idle_s=10, max_s=100)
    assert sessions.expired(0, 95, 99) is None
    assert sessions.expired(0, 80, 95) == "session idle too long"
    assert sessions.expired(0, 99, 100) == "session reached its maximum length"


LOCKOUT = LockoutPolicy(max_failures=3, lock_s=600)
SESSIONS = SessionPolicy(idle_s=900, max_s=3600)


@pytest.fixture
def cluster(pg_server: str, tmp_path: Path) -> Iterator[ConsoleDb]:
    db = ConsoleDb("cluster", tmp_path / "unused.db", pg_server)
    yield db
    db.close()


@pytest.fixture
def store(console: ConsoleDb) -> tuple[OperatorStore, Clock, str]:
    clock = Clock()
    s = console.store(clock, lockout=LOCKOUT, sessions=SESSIONS)
    secret = new_totp_secret()
    s.add("j.martin", Role.VIEWER, Scope.parse("unit-a/street"), PASSWORD, secret)
    return s, clock, secret


def code(secret: str, clock: Clock, ahead: int = 0) -> str:
    return totp_at(secret, totp_step(clock.now) + ahead)


def test_database_is_private_and_holds_no_password_or_session_token(
    store: tuple[OperatorStore, Clock, str], console: ConsoleDb
) -> None:
    s, clock, secret = store
    result = s.login("j.martin", PASSWORD, code(secret, clock))
    assert result.session_token is not None
    if console.kind == "embedded":
        assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
        with sqlite3.connect(s.path) as db:
            dump = "\n".join(db.iterdump())
    else:  # every table of the database, the segment index's included
        tables = console.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        dump = "\n".join(repr(console.rows(f"SELECT * FROM {t}")) for (t,) in tables)
    assert "j.martin" in dump and "scrypt$" in dump
    assert PASSWORD not in dump and result.session_token not in dump


def test_login_needs_password_and_a_fresh_code_and_locks_after_failures(
    store: tuple[OperatorStore, Clock, str],
) -> None:
    s, clock, secret = store
    ok = s.login("j.martin", PASSWORD, code(secret, clock))
    assert ok.session is not None and ok.session.operator.role is Role.VIEWER
    assert ok.session.operator.scope == Scope(("unit-a/street",))
    # the same code again (replay), a wrong password, a stranger: refused, with the reason
    assert "reused" in str(s.login("j.martin", PASSWORD, code(secret, clock)).refusal)
    assert "wrong password" in str(s.login("j.martin", "nope", code(secret, clock, 1)).refusal)
    assert "unknown operator" in str(s.login("nobody", PASSWORD, "000000").refusal)
    third = s.login("j.martin", "again wrong", code(secret, clock, 1)).refusal
    assert third is not None and "locked for 600 s" in third
    # locked: even the right password and code are refused until the lock runs out
    locked = s.login("j.martin", PASSWORD, code(secret, clock, 1))
    assert locked.session is None and "locked until" in str(locked.refusal)
    assert s.get("j.martin").locked_until is not None  # type: ignore[union-attr]
    clock.now += 601
    assert s.login("j.martin", PASSWORD, code(secret, clock)).session is not None
    assert s.get("j.martin").failures == 0  # type: ignore[union-attr]


def test_an_admin_unlocks_and_a_disabled_account_loses_its_sessions(
    store: tuple[OperatorStore, Clock, str],
) -> None:
    s, clock, secret = store
    token = s.login("j.martin", PASSWORD, code(secret, clock)).session_token
    for _ in range(3):
        s.login("j.martin", "wrong", "000000")
    s.unlock("j.martin")
    clock.now += 30
    assert s.login("j.martin", PASSWORD, code(secret, clock)).session is not None
    s.set_disabled("j.martin", True)
    assert s.session(token) == (None, "unknown or ended session")
    clock.now += 30
    refused = s.login("j.martin", PASSWORD, code(secret, clock))
    assert refused.session is None and "disabled" in str(refused.refusal)
    with pytest.raises(ConfigError, match="no operator named"):
        s.set_disabled("nobody", True)


def test_sessions_expire_when_idle_and_after_their_maximum_and_end_at_logout(
    store: tuple[OperatorStore, Clock, str], console: ConsoleDb
) -> None:
    s, clock, secret = store
    token = s.login("j.martin", PASSWORD, code(secret, clock)).session_token
    clock.now += 800
    session, _ = s.session(token)
    assert session is not None  # activity restarts the idle time
    clock.now += 800
    assert s.session(token)[0] is not None
    clock.now += 901
    assert s.session(token) == (None, "session idle too long (j.martin)")
    assert s.session(token) == (None, "unknown or ended session")  # deleted, not revived
    clock.now += 60
    forgotten = s.login("j.martin", PASSWORD, code(secret, clock)).session_token
    clock.now += 960  # nobody comes back to it; the next log-in sweeps it away
    token = s.login("j.martin", PASSWORD, code(secret, clock)).session_token
    assert console.rows("SELECT count(*) FROM sessions") == [(1,)]
    assert s.session(forgotten) == (None, "unknown or ended session")
    for _ in range(5):
        clock.now += 720
        last = s.session(token)
    assert last == (None, "session reached its maximum length (j.martin)")
    clock.now += 60
    result = s.login("j.martin", PASSWORD, code(secret, clock))
    assert result.session is not None
    s.logout(result.session.token_sha256)
    assert s.session(result.session_token)[0] is None


def test_weak_passwords_and_duplicate_names_are_refused(
    store: tuple[OperatorStore, Clock, str],
) -> None:
    s, _, _ = store
    with pytest.raises(ConfigError, match="at least 12"):
        s.add("a.dupont", Role.ADMIN, Scope(), "short", new_totp_secret())
    with pytest.raises(ConfigError, match="name"):
        s.add("a.dupont", Role.ADMIN, Scope(), "a.dupont-2026-x", new_totp_secret())
    with pytest.raises(ConfigError, match="exists"):
        s.add("j.martin", Role.ADMIN, Scope(), PASSWORD + "x", new_totp_secret())


def test_a_damaged_operators_database_is_named_not_a_traceback(tmp_path: Path) -> None:
    """The tired technician's case: operators.db overwritten (a bad restore, a full disk's
    half-written copy). Both edge-csu serve and edge-csu operator say which file and what to
    do, exit 2, and change nothing."""
    csu = make_csu(tmp_path)
    csu.write_config(port=free_port())
    damaged = b"SQLite format 3\x00" + b"\xff" * 4000  # a header, then garbage
    db = csu.directory / "operators.db"
    db.write_bytes(damaged)
    for args in (["operator", "list"], ["serve"]):
        out = subprocess.run(
            [sys.executable, "-m", "edge.csu.main", *args, "--config", str(csu.config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 2, (args, out.stderr[-2000:])
        assert f"{db}: the operators' database is damaged" in out.stderr, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
    assert db.read_bytes() == damaged


# --- cluster mode: several receivers, one database ---------------------------------------------


def test_a_session_opened_through_one_receiver_is_valid_through_another(
    cluster: ConsoleDb,
) -> None:
    clock = Clock()
    r1 = cluster.store(clock, "r1", lockout=LOCKOUT, sessions=SESSIONS)
    r2 = cluster.store(clock, "r2", lockout=LOCKOUT, sessions=SESSIONS)
    secret = new_totp_secret()
    r1.add("j.martin", Role.VIEWER, Scope.parse("unit-a"), PASSWORD, secret)
    result = r1.login("j.martin", PASSWORD, code(secret, clock))
    assert result.session is not None and result.session_token is not None
    seen, why = r2.session(result.session_token)
    assert why is None and seen is not None
    assert (seen.operator.name, seen.csrf) == ("j.martin", result.session.csrf)
    r2.logout(seen.token_sha256)  # logged out through r2: ended on r1 too
    assert r1.session(result.session_token) == (None, "unknown or ended session")
    # an account disabled through one receiver loses its sessions on every receiver
    clock.now += 30
    token = r2.login("j.martin", PASSWORD, code(secret, clock)).session_token
    assert r1.session(token)[0] is not None
    r1.set_disabled("j.martin", True)
    assert r2.session(token) == (None, "unknown or ended session")


def test_failures_spread_over_receivers_lock_the_account_at_the_same_total(
    cluster: ConsoleDb,
) -> None:
    clock = Clock()
    r1, r2 = (cluster.store(clock, r, lockout=LOCKOUT, sessions=SESSIONS) for r in ("r1", "r2"))
    secret = new_totp_secret()
    r1.add("j.martin", Role.VIEWER, Scope(), PASSWORD, secret)
    assert "(1 in a row)" in str(r1.login("j.martin", "wrong", "000000").refusal)
    assert "(2 in a row)" in str(r2.login("j.martin", "wrong", "000000").refusal)
    third = r1.login("j.martin", "wrong", "000000").refusal
    assert third is not None and "locked for 600 s" in third
    refused = r2.login("j.martin", PASSWORD, code(secret, clock))
    assert refused.session is None and "locked until" in str(refused.refusal)
    assert r2.get("j.martin").locked_until is not None  # type: ignore[union-attr]


def test_concurrent_failures_on_two_receivers_are_all_counted(cluster: ConsoleDb) -> None:
    """Two receivers checking wrong passwords for one account at the same moment: each
    failure counts (a read-then-write count would lose the overlapping ones)."""
    clock = Clock()
    policy = LockoutPolicy(max_failures=100, lock_s=600)
    stores = [cluster.store(clock, r, lockout=policy, sessions=SESSIONS) for r in ("r1", "r2")]
    stores[0].add("j.martin", Role.VIEWER, Scope(), PASSWORD, new_totp_secret())
    attempts = 4
    start = threading.Barrier(len(stores))
    refusals: list[str | None] = []

    def guess(s: OperatorStore) -> None:
        start.wait()
        for _ in range(attempts):
            refusals.append(s.login("j.martin", "wrong guess", "000000").refusal)

    threads = [threading.Thread(target=guess, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = attempts * len(stores)
    assert len(refusals) == total and all("wrong password" in str(r) for r in refusals)
    assert stores[1].get("j.martin").failures == total  # type: ignore[union-attr]
    # each refusal saw a different count: none was lost or counted twice
    counts = sorted(int(str(r).rsplit("(", 1)[1].split()[0]) for r in refusals)
    assert counts == list(range(1, total + 1))


def test_a_one_time_code_used_through_one_receiver_is_refused_through_another(
    cluster: ConsoleDb,
) -> None:
    clock = Clock()
    r1, r2 = (cluster.store(clock, r, lockout=LOCKOUT, sessions=SESSIONS) for r in ("r1", "r2"))
    secret = new_totp_secret()
    r1.add("j.martin", Role.VIEWER, Scope(), PASSWORD, secret)
    assert r1.login("j.martin", PASSWORD, code(secret, clock)).session is not None
    replay = r2.login("j.martin", PASSWORD, code(secret, clock))
    assert replay.session is None and "reused" in str(replay.refusal)
    # the same fresh code given to both receivers at once (a code seen over a shoulder,
    # sent to two receivers): one session, one refusal
    clock.now += 30
    fresh = code(secret, clock)
    start = threading.Barrier(2)
    results: list[bool] = []

    def login(s: OperatorStore) -> None:
        start.wait()
        results.append(s.login("j.martin", PASSWORD, fresh).session is not None)

    threads = [threading.Thread(target=login, args=(s,)) for s in (r1, r2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]


def test_operator_commands_work_on_the_cluster_database(cluster: ConsoleDb, tmp_path: Path) -> None:
    """edge-csu operator with a cluster csu.toml: the account is in the shared database (no
    operators.db is made) and logs in through any receiver."""
    config = tmp_path / "csu.toml"
    config.write_text(
        f"""storage = "cluster"

[cluster]
receiver_id = "r1"

[cluster.database]
conninfo = "{cluster.conninfo}"

[cluster.object_store]
endpoint = "http://127.0.0.1:9"
bucket = "unused"
access_key = "unused"
secret_file = "unused"
"""
    )

    def operator(*args: str, stdin: str = "") -> str:
        out = subprocess.run(
            [sys.executable, "-m", "edge.csu.main", "operator", *args, "--config", str(config)],
            input=stdin, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    added = operator(
        "add", "--name", "a.dupont", "--role", "supervisor", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    secret = added.split("shown only now):\n", 1)[1].split()[0]
    assert not (tmp_path / "operators.db").exists()
    clock = Clock(time.time())  # the command's clock is the real one
    policy = LockoutPolicy()  # the command's default one too
    r2 = cluster.store(clock, "r2", lockout=policy, sessions=SESSIONS)
    for _ in range(policy.max_failures):
        r2.login("a.dupont", "wrong", "000000")
    assert "LOCKED until" in operator("list")
    operator("unlock", "--name", "a.dupont")
    result = r2.login("a.dupont", PASSWORD, code(secret, clock))
    assert result.session is not None and result.session.operator.role is Role.SUPERVISOR
    # a lost phone: new password and secret, the session ends on every receiver
    reset = operator("reset", "--name", "a.dupont", "--password-stdin", stdin=PASSWORD + "!\n")
    new_secret = reset.split("shown only now):\n", 1)[1].split()[0]
    assert new_secret != secret and r2.session(result.session_token)[0] is None
    clock.now += 30
    result = r2.login("a.dupont", PASSWORD + "!", code(new_secret, clock))
    assert result.session is not None
    operator("set-auth", "--name", "a.dupont", "--auth", "certificate")
    assert r2.session(result.session_token)[0] is None
    assert r2.get("a.dupont").auth.value == "certificate"  # type: ignore[union-attr]
    operator("disable", "--name", "a.dupont")
    assert "disabled" in operator("list")
    # the records go to the cluster's shared audit chain (no local audit.jsonl)
    assert not (tmp_path / "audit.jsonl").exists()
    rows = cluster.rows("SELECT line FROM audit_chain ORDER BY seq")
    records = [json.loads(str(line)) for (line,) in rows]
    assert [(r["action"], r["receiver"]) for r in records] == [
        ("operator-add", "r1"), ("operator-unlock", "r1"), ("operator-reset", "r1"),
        ("operator-set-auth", "r1"), ("operator-disable", "r1"),
    ]  # fmt: skip


def test_the_storage_mode_chooses_where_the_console_state_lives(
    cluster: ConsoleDb, tmp_path: Path
) -> None:
    """What web.py and edge-csu operator construct: the operators' SQLite file in embedded
    mode; in cluster mode the shared database, through the receiver's own connections."""
    embedded = ServeConfig.model_validate({"operators_db": tmp_path / "operators.db"})
    assert type(operator_store(embedded)) is OperatorStore
    assert isinstance(decision_log(embedded), SqliteDecisions)
    assert (tmp_path / "operators.db").exists()
    assert cluster.conninfo is not None
    intake = _cluster_store(cluster.conninfo, "r1", tmp_path / "secret")
    try:
        cfg = ServeConfig.model_validate(
            {
                "storage": "cluster",
                "operators_db": tmp_path / "never.db",
                "cluster": {
                    "receiver_id": "r1",
                    "database": {"conninfo": cluster.conninfo},
                    "object_store": {
                        "endpoint": "http://127.0.0.1:9", "bucket": "segments",
                        "access_key": "k", "secret_file": tmp_path / "secret",
                    },
                },
            }
        )  # fmt: skip
        store = operator_store(cfg, intake)
        assert isinstance(store, PgOperatorStore) and isinstance(
            decision_log(cfg, intake), PgDecisions
        )
        secret = new_totp_secret()
        store.add("j.martin", Role.VIEWER, Scope(), PASSWORD, secret)
        clock = Clock(time.time())
        other = cluster.store(clock, "r2", lockout=LOCKOUT, sessions=SESSIONS)
        token = other.login("j.martin", PASSWORD, code(secret, clock)).session_token
        assert store.session(token)[0] is not None
        assert not (tmp_path / "never.db").exists()
    finally:
        intake.close()


def test_operator_commands_say_when_the_cluster_database_is_out_of_reach(tmp_path: Path) -> None:
    config = tmp_path / "csu.toml"
    config.write_text(
        f"""storage = "cluster"

[cluster]
receiver_id = "r1"

[cluster.database]
conninfo = "host={tmp_path / "no-server"} dbname=edge"
connect_timeout_s = 2

[cluster.object_store]
endpoint = "http://127.0.0.1:9"
bucket = "unused"
access_key = "unused"
secret_file = "unused"
"""
    )
    out = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "operator", "list", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "the console's accounts are in the cluster's database, out of reach" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "operators.db").exists()
