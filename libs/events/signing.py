"""Signed events: a trainer's key, signing what it publishes, verifying what is stored.

Each trainer holds an nkey *user* seed (ed25519). Every job event it publishes carries two
headers beside JetStream's own (`Nats-Msg-Id`, the fencing ones, which stay as they are):

- `Trainbus-Signer`: the trainer's public key (`U...`, as `nkeys` encodes it);
- `Trainbus-Signature`: base64url (no padding) of the ed25519 signature over
  `subject + b"\\n" + data`. The subject is signed too, so a signed `progress` cannot be
  replayed as a `completed` on another subject or under another job id.

`verify_headers` is the one check (log.py calls it for every stored event): it answers the
verified signer, or None, and whether a signature was present but did not verify. The key is
loaded from `$TRAINBUS_WORKER_KEY` (a seed file), else from the state folder `trainbus up` keeps
(`$TRAINBUS_STORE`, default `./.trainbus`: libs/events/credentials.py) as
`keys/<kind>-trainer.nk`, created on first start with mode 0600. The seed is never logged, put
in an error or in a repr.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Final

import nacl.exceptions
import nacl.signing
import nkeys

from libs.events.credentials import create_private, new_user_seed, read_private, store_from_env
from libs.events.errors import BusConfigError

log = logging.getLogger(__name__)

SIGNER_HEADER: Final = "Trainbus-Signer"
SIGNATURE_HEADER: Final = "Trainbus-Signature"
KEY_ENV: Final = "TRAINBUS_WORKER_KEY"
# An nkey public key is 56 base32 characters; anything much longer is not one (and a hostile
# header must not cost a large decode).
_MAX_KEY_CHARS: Final = 64
_MAX_SIGNATURE_CHARS: Final = 128


def signed_bytes(subject: str, data: bytes) -> bytes:
    """What a signature covers: the subject, a newline, the payload."""
    return subject.encode() + b"\n" + data


class WorkerKey:
    """A trainer's signing key (an nkey user seed). `public_key` is what the heartbeat
    announces and the trusted-workers bucket lists."""

    __slots__ = ("_pair", "public_key")

    def __init__(self, seed: bytes) -> None:
        try:
            pair = nkeys.from_seed(bytearray(seed.strip()))
            public = pair.public_key.decode()
        except (nkeys.NkeysError, ValueError, binascii.Error):
            # Never echo the seed: it is the secret.
            raise BusConfigError("the worker key is not a valid nkey seed") from None
        if not public.startswith("U"):
            raise BusConfigError("the worker key must be an nkey user seed (SU...)")
        self._pair = pair
        self.public_key: str = public

    @classmethod
    def generate(cls) -> WorkerKey:
        return cls(new_user_seed())

    def sign(self, subject: str, data: bytes) -> dict[str, str]:
        """The two signature headers for a message of `data` on `subject`."""
        signature = self._pair.sign(signed_bytes(subject, data))
        return {SIGNER_HEADER: self.public_key,
                SIGNATURE_HEADER: base64.urlsafe_b64encode(signature).rstrip(b"=").decode()}

    def __repr__(self) -> str:
        return f"WorkerKey({self.public_key})"  # the public half only


def default_key_path(kind: str, store: Path | None = None) -> Path:
    """`<store>/keys/<kind>-trainer.nk` (store: TRAINBUS_STORE, else ./.trainbus)."""
    return (store if store is not None else store_from_env()) / "keys" / f"{kind}-trainer.nk"


def load_worker_key(kind: str, path: Path | None = None) -> WorkerKey:
    """The trainer's key: `path`, else `$TRAINBUS_WORKER_KEY`, else the state directory's
    `keys/<kind>-trainer.nk`, which is created (0600) when missing. A named file that does
    not exist is an error (a typo must not silently make a new, untrusted key)."""
    named = path if path is not None else (Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV)
                                           else None)
    if named is not None:
        if not named.is_file():
            raise BusConfigError(f"{KEY_ENV} {str(named)!r} is not a file")
        return WorkerKey(read_private(named))
    return ensure_worker_key(default_key_path(kind))


def ensure_worker_key(target: Path) -> WorkerKey:
    """The key in `target`, created (0600, fsynced, its folder 0700) when the file is missing;
    refused (CredentialsError) when other users can read it: a known seed signs as anyone."""
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        seed = new_user_seed()
        # Of two trainers starting at once one key wins; the other reads it below.
        if create_private(target, seed + b"\n"):
            key = WorkerKey(seed)
            log.info("created worker key %s in %s", key.public_key, target)
            return key
    return WorkerKey(read_private(target))


@lru_cache(maxsize=256)
def _verify_key(public_key: str) -> nacl.signing.VerifyKey | None:
    """The ed25519 key of an nkey user public key; None when it is not one (bad base32,
    prefix or checksum). Cached: a log holds a handful of signers and many messages."""
    if len(public_key) > _MAX_KEY_CHARS or not public_key.startswith("U"):
        return None
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
        return None
    body, checksum = raw[:-2], raw[-2:]
    if nkeys.crc16(bytearray(body)).to_bytes(2, "little") != checksum:
        return None
    return nacl.signing.VerifyKey(bytes(body[1:]))


def is_public_key(text: str) -> bool:
    """Whether `text` is an nkey user public key (`U...`, 56 characters, checksum right)."""
    return _verify_key(text) is not None


def verify(public_key: str, subject: str, data: bytes, signature: str) -> bool:
    """Whether `signature` (base64url) is `public_key`'s over `subject` and `data`."""
    key = _verify_key(public_key)
    if key is None or len(signature) > _MAX_SIGNATURE_CHARS:
        return False
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        key.verify(signed_bytes(subject, data), raw)
    except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError,
            nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    return True


def verify_headers(subject: str, data: bytes, headers: Mapping[str, str] | None
                   ) -> tuple[str | None, bool]:
    """(verified signer or None, whether a signature was present but invalid). Never raises:
    stored headers are as untrusted as the payload."""
    if not headers:
        return None, False
    signer, signature = headers.get(SIGNER_HEADER), headers.get(SIGNATURE_HEADER)
    if signer is None and signature is None:
        return None, False
    if (isinstance(signer, str) and isinstance(signature, str)
            and verify(signer, subject, data, signature)):
        return signer, False
    return None, True
