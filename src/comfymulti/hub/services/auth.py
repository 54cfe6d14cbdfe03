"""Secrets: argon2 password hashes and random tokens stored only as SHA-256."""

from __future__ import annotations

import functools
import hashlib
import secrets

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from comfymulti.blocking import Offload

# Passwords people choose: OWASP's recommended argon2id set (m=19 MiB, t=2, p=1), about 20 ms
# per check on a 2-core hub, where argon2-cffi's default (64 MiB, t=3, p=4) took 120 ms and
# 64 MiB per login at once.
_CHOSEN = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Passwords the hub generates: light argon2id (1 MiB, t=1), about 1 ms per check.
_GENERATED = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

# Unambiguous characters for passwords people type from a printed card.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

USER_TOKEN_PREFIX = "cmu_"
WORKER_TOKEN_PREFIX = "cmw_"


def hash_password(password: str, *, generated: bool) -> str:
    """The one place a password's hash strength is picked, by where the password came from.
    One the hub generated has about 74 random bits: no stretching makes 2^73 guesses any less
    out of reach, while OWASP's strength made 300 logins at 9:00 queue for 10 s on 2 cores.
    One a person chose may be guessable, so it keeps OWASP's strength."""
    return (_GENERATED if generated else _CHOSEN).hash(password)


@functools.cache
def _dummy_hash() -> str:
    # Light like most accounts' (participants'); the failed-login floor hides the difference.
    return _GENERATED.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; with no hash (unknown user) check against a dummy one, so an unknown
    name costs the same time as a wrong password and does not reveal which names exist."""
    try:
        # Either hasher checks both kinds: the parameters are read from the hash itself.
        return _CHOSEN.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True for hashes made with neither of today's two parameter sets (rehashed at the next
    login); flagging either set would rehash at every login."""
    try:
        return all(h.check_needs_rehash(password_hash) for h in (_CHOSEN, _GENERATED))
    except InvalidHashError:
        return False


# Checks of light hashes (1 MiB each) made at once. Two at a time, 300 logins at once queued
# p50 3.0 s, p99 6.1 s for checks of 1 ms (p99 18 ms): each check's hand-over from the loop to
# a thread and back, on a busy hub, took ~40 ms.
LIGHT_AT_ONCE = 16


def _is_light(password_hash: str | None) -> bool:
    """Whether checking this hash needs no more memory than a generated password's (no hash:
    the dummy one, light too)."""
    if password_hash is None:
        return True
    try:
        return extract_parameters(password_hash).memory_cost <= _GENERATED.memory_cost
    except InvalidHashError:
        return True  # refused without hashing anything


class PasswordChecks:
    """Argon2 work off the event loop, each check holding its memory cost while it runs: at
    most `limit` of OWASP's strength (19 MiB) at once, so a login rush waits its turn instead
    of growing the process, and LIGHT_AT_ONCE light ones.

    In threads of their own: in the shared pool a 1 ms check waited behind the synchronous
    routes of every workspace opening at the same time (300 logins at once: p50 1.8 s, p99
    7.1 s between asking for a check and its answer)."""

    def __init__(self, limit: int) -> None:
        self._strong = Offload(limit)
        self._light = Offload(LIGHT_AT_ONCE)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        lane = self._light if _is_light(password_hash) else self._strong
        return await lane(verify_password, password_hash, password)

    async def rehash(self, password: str) -> str:
        """A fresh hash for a password given at login: where it came from is unknown there,
        so it gets the strength of a chosen one."""
        return await self._strong(hash_password, password, generated=False)


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
