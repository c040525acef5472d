"""The CSU operator console on the operators' listener of ``edge-csu serve``.

``roles`` (roles, permissions, scopes, lock-out and session policy: pure), ``credentials``
(scrypt password hashes, TOTP), ``accounts`` (operator accounts and sessions in SQLite),
``certlogin`` (log-in with a console client certificate of the city CA, session binding),
``web`` (log-in, sessions, CSRF, security headers, the authentication every operator request
goes through), ``i18n`` (French by default, English), ``operator_cmd`` (``edge-csu operator``).
docs/OPERATIONS.md, *CSU operators*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.csu.console.accounts import OperatorStore as OperatorStore
    from edge.csu.console.roles import Permission as Permission
    from edge.csu.console.roles import Role as Role
    from edge.csu.console.roles import Scope as Scope

_EXPORTS = {
    "OperatorStore": "accounts",
    "Permission": "roles",
    "Role": "roles",
    "Scope": "roles",
}
__all__ = ["OperatorStore", "Permission", "Role", "Scope"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
