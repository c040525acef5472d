"""Who may do what in the console, and on which cameras: pure policy, no I/O.

Four roles, each a superset of the one before: a viewer watches and decides on alerts, as the
agents in front of the wall do; an investigator may also export; a supervisor also reads the
audit log and the false-alarm rates; an admin also manages operators. A scope names the units
(``unit``) or cameras (``unit/camera``) an operator may see; an empty scope is the whole fleet.
The same checks judge console sessions and bearer tokens.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_ID = r"[a-z0-9][a-z0-9-]{0,62}"
SCOPE_ITEM = re.compile(rf"^{_ID}(/{_ID})?$")
OPERATOR_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
"""Operator names, in accounts and token entries alike (the audit log's ``who``)."""


class Role(enum.StrEnum):
    VIEWER = "viewer"
    INVESTIGATOR = "investigator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    VIEW = "view"
    """Live and recorded video of the cameras in scope (every viewing audited)."""
    EXPORT = "export"
    """Evidence exports for a case number."""
    DECIDE = "decide"
    """Confirm, dismiss or escalate alerts: the agents watching the wall decide (decree
    2023-828)."""
    AUDIT = "audit"
    """Read the operator audit log and the per-rule false-alarm rates."""
    MANAGE = "manage"
    """Operator accounts (the CLI does it today; the role is kept for the console)."""


_GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.VIEW, Permission.DECIDE}),
    Role.INVESTIGATOR: frozenset({Permission.VIEW, Permission.DECIDE, Permission.EXPORT}),
    Role.SUPERVISOR: frozenset(
        {Permission.VIEW, Permission.EXPORT, Permission.DECIDE, Permission.AUDIT}
    ),
    Role.ADMIN: frozenset(Permission),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in _GRANTS[role]


@dataclass(frozen=True, slots=True)
class Scope:
    """Units and cameras an operator may see; empty means every camera of the fleet."""

    items: tuple[str, ...] = ()

    @classmethod
    def parse(cls, items: list[str] | tuple[str, ...] | str) -> Scope:
        """From ``["unit-a", "unit-b/street"]`` or ``"unit-a,unit-b/street"``; ``ValueError``
        names the first item that is neither a unit id nor ``unit/camera``."""
        raw = items.split(",") if isinstance(items, str) else list(items)
        clean = tuple(sorted({i.strip() for i in raw if i.strip()}))
        for item in clean:
            if not SCOPE_ITEM.match(item):
                raise ValueError(f"scope item {item!r}: give UNIT or UNIT/CAMERA (lower case)")
        return cls(clean)

    @property
    def everything(self) -> bool:
        return not self.items

    def allows_unit(self, unit: str) -> bool:
        """Whether any camera of ``unit`` is in scope (unit-level pages and health)."""
        return self.everything or any(i == unit or i.startswith(f"{unit}/") for i in self.items)

    def allows_camera(self, unit: str, camera: str) -> bool:
        return self.everything or unit in self.items or f"{unit}/{camera}" in self.items

    def __str__(self) -> str:
        return ",".join(self.items) if self.items else "*"


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Consecutive failed log-ins before an account locks, and for how long.

    Counted per account, not per address: a CSU's workstations sit behind one NAT, and a
    guesser changing addresses must not get more tries.
    """

    max_failures: int = 5
    lock_s: int = 15 * 60

    def locked_until(self, failures: int, last_failure_s: float) -> float | None:
        """When the account unlocks after ``failures`` in a row, the last at ``last_failure_s``;
        None when it is not locked."""
        if failures < self.max_failures:
            return None
        return last_failure_s + self.lock_s


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """A session ends after ``idle_s`` without a request, and ``max_s`` after log-in whatever
    happens (one shift); the operator logs in again with password and code."""

    idle_s: int = 15 * 60
    max_s: int = 12 * 3600

    def expired(self, created_s: float, last_seen_s: float, now_s: float) -> str | None:
        """Why a session is over at ``now_s``, or None while it is valid."""
        if now_s - created_s >= self.max_s:
            return "session reached its maximum length"
        if now_s - last_seen_s >= self.idle_s:
            return "session idle too long"
        return None
