"""Secrets: argon2 password hashes and random tokens stored only as SHA-256."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's recommended argon2id set (m=19 MiB, t=2, p=1): about 20 ms per check on a 2-core
# hub, where argon2-cffi's default (64 MiB, t=3, p=4) took 120 ms and 64 MiB per login at once.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

# Unambiguous characters for passwords people type from a printed card.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

USER_TOKEN_PREFIX = "cmu_"
WORKER_TOKEN_PREFIX = "cmw_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; with no hash (unknown user) check against a dummy one, so an unknown
    name costs the same time as a wrong password and does not reveal which names exist."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True for hashes made with other parameters than today's (rehashed at the next login)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False


class PasswordChecks:
    """Argon2 work off the event loop, at most `limit` at once: each check holds its memory
    cost while it runs, so a login rush waits its turn instead of growing the process."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await anyio.to_thread.run_sync(verify_password, password_hash, password)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await anyio.to_thread.run_sync(hash_password, password)


def generate_password() -> str:
    """15 random characters in three groups (about 74 bits, enough for the light hash),
    easy to type: 'k7pmx-3qdxa-9rtwz'."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(15))
    return f"{chars[:5]}-{chars[5:10]}-{chars[10:]}"


def new_token(prefix: str) -> tuple[str, str]:
    """A fresh token and the hash to store. The token itself is shown once, never stored."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
