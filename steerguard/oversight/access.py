"""Who may read the audit log: API keys with the `audit:read` scope (a bearer token on the
API; exchanged for an HttpOnly session cookie on the dashboard), or, with no keys
configured, loopback clients only. Sign-in and sign-out forms carry CSRF tokens."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fastapi import Request

from steerguard.oversight.problems import OversightProblem

SCOPE = "audit:read"
SESSION_COOKIE = "sg_session"
CSRF_COOKIE = "sg_csrf"
COOKIE_PATH = "/dashboard"


class KeyOwner(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def scopes(self) -> frozenset[str]: ...


class KeyChecker(Protocol):
    """What oversight needs of the server's key ring (steerguard.server.keys.KeyRing)."""

    @property
    def enabled(self) -> bool:
        """False: no keys at all (loopback-only mode)."""
        ...

    def lookup(self, key: str) -> KeyOwner | None:
        """The key's owner (name and scopes), or None when it is not a key."""
        ...


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    via: Literal["key", "session", "loopback"]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(slots=True)
class Session:
    token: str
    principal: Principal
    csrf: str
    expires: float
    created: float = field(default_factory=time.time)


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Access:
    def __init__(self, keys: KeyChecker | None = None, *, session_ttl_s: float = 8 * 3600,
                 max_sessions: int = 10_000) -> None:
        self.keys = keys
        self.session_ttl_s = session_ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def open_mode(self) -> bool:
        """No keys configured: loopback clients read without signing in."""
        return self.keys is None or not self.keys.enabled

    # ---- the API: a bearer key per request --------------------------------------------
    def api(self, request: Request, scope: str = SCOPE) -> Principal:
        if self.open_mode:
            return self._loopback(request)
        header = request.headers.get("authorization", "")
        kind, _, key = header.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise OversightProblem(
                401, "Unauthorized", "Authorization: send 'Bearer <API key>' with a key that "
                f"has the {scope} scope", headers={"WWW-Authenticate": "Bearer"})
        found = self.keys.lookup(key.strip()) if self.keys else None
        if found is None:
            raise OversightProblem(401, "Unauthorized", "Authorization: not a known API key",
                                   headers={"WWW-Authenticate": "Bearer"})
        who = Principal(found.name, frozenset(found.scopes), "key")
        if not who.allows(scope):
            raise OversightProblem(403, "Forbidden",
                                   f"key {who.name!r} lacks the {scope} scope")
        return who

    def _loopback(self, request: Request) -> Principal:
        if not is_loopback(request):
            raise OversightProblem(403, "Forbidden", "no API keys are configured: the audit "
                                   "API and dashboard answer loopback clients only")
        return Principal("loopback", frozenset({SCOPE}), "loopback")

    # ---- the dashboard: a session cookie ----------------------------------------------
    def page(self, request: Request) -> Principal | None:
        """The signed-in principal, or None (sign in first). Raises 403 for a loopback-only
        server seen from elsewhere."""
        if self.open_mode:
            return self._loopback(request)
        session = self.session(request)
        return session.principal if session else None

    def session(self, request: Request) -> Session | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        with self._lock:
            s = self._sessions.get(token)
            if s is None:
                return None
            if s.expires < time.time():
                del self._sessions[token]
                return None
            return s

    def sign_in(self, key: str) -> Session | Principal:
        """A new session for a key with the scope; the Principal alone when the key is
        known but lacks it (nothing is stored then). Raises for an unknown key."""
        found = self.keys.lookup(key) if self.keys else None
        if found is None:
            raise OversightProblem(401, "Unauthorized", "api_key: not a known API key")
        principal = Principal(found.name, frozenset(found.scopes), "session")
        if not principal.allows(SCOPE):
            return principal
        now = time.time()
        s = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(24),
                    now + self.session_ttl_s)
        with self._lock:
            self._sessions[s.token] = s
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return s

    def sign_out(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    @property
    def session_count(self) -> int:
        return len(self._sessions)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
