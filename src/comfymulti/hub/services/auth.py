"""Secrets: argon2 password hashes and random tokens stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

# Unambiguous characters for passwords people type from a printed card.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

USER_TOKEN_PREFIX = "cmu_"
WORKER_TOKEN_PREFIX = "cmw_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """12 random characters in three groups (about 59 bits), easy to type: 'k7pm-3qdx-9rtw'."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def new_token(prefix: str) -> tuple[str, str]:
    """A fresh token and the hash to store. The token itself is shown once, never stored."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
