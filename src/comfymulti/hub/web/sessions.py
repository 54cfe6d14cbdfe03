"""Signed session cookies. A session names the user and a fingerprint of the password hash,
so a password reset ends every session of that account."""

from __future__ import annotations

import hashlib

from itsdangerous import BadSignature, URLSafeTimedSerializer

from comfymulti.models import User

COOKIE = "comfymulti_session"
MAX_AGE = 7 * 24 * 3600


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="comfymulti-session")


def _fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def issue(secret: str, user: User) -> str:
    return _serializer(secret).dumps({"u": user.name, "f": _fingerprint(user)})


def read(secret: str, value: str) -> tuple[str, str] | None:
    """(user name, fingerprint) from a cookie value, or None if forged or expired."""
    try:
        data = _serializer(secret).loads(value, max_age=MAX_AGE)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        return None
    return data["u"], str(data.get("f", ""))


def valid_for(user: User, fingerprint: str) -> bool:
    return fingerprint == _fingerprint(user)
