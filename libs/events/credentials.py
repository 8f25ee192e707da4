"""The credentials of a secured `trainbus up`/`demo`: one nkey per role and the API token, kept
in `<store>/credentials/` (0700, each file 0600), made on the first start and reused after.

    creds = ensure_credentials(Path(".trainbus"))        # made once, then read
    config = creds.write_server_config(names)            # <store>/nats-auth.conf, 0600
    BusConfig(urls=..., nkey_seed_file=str(creds.seed_file("backend")))

The embedded server gets `-c <store>/nats-auth.conf`: the role permissions of
libs/events/roles.py with each role's public key as its user, and no anonymous user. The local
CLI finds the seeds through `local_credentials()` (TRAINBUS_STORE, default ./.trainbus) when no
NATS credential is configured.

A file another user could read is refused, not silently fixed: a seed that was readable may be
known, so the message says to delete the folder (new credentials are made at the next start).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from libs.events.errors import BusConfigError
from libs.events.roles import ROLES, render_nkeys
from libs.events.subjects import Names

CREDENTIALS_DIR: Final = "credentials"
SEED_SUFFIX: Final = ".nk"
API_TOKEN_FILE: Final = "api-token"
SERVER_CONFIG_FILE: Final = "nats-auth.conf"
DEFAULT_STORE: Final = Path(".trainbus")
_PRIVATE_MASK: Final = stat.S_IRWXG | stat.S_IRWXO


class CredentialsError(BusConfigError):
    """Raised when the credentials folder or one of its files cannot be used (names the file)."""


def store_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """The state folder of `trainbus up`: TRAINBUS_STORE, else ./.trainbus."""
    env = os.environ if environ is None else environ
    return Path(env.get("TRAINBUS_STORE", "").strip() or DEFAULT_STORE)


def new_user_seed() -> bytes:
    """A fresh nkey user seed (`SU...`)."""
    import nkeys

    return bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    """The user public key (`U...`) of a seed; CredentialsError when it is not one."""
    import nkeys

    try:
        key = nkeys.from_seed(bytearray(seed.strip())).public_key
    except (nkeys.NkeysError, ValueError, TypeError) as exc:
        raise CredentialsError(f"not an nkey seed: {type(exc).__name__}") from None
    text = key.decode() if isinstance(key, bytes) else str(key)
    if not text.startswith("U"):
        raise CredentialsError("the seed is not a user nkey (its public key starts with "
                               f"{text[:1]!r}, not 'U')")
    return text


def _check_private(path: Path, *, folder: bool = False) -> None:
    mode = path.stat().st_mode
    if mode & _PRIVATE_MASK:
        raise CredentialsError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}; it must be "
            f"{'0700' if folder else '0600'}): its secrets may be known. Delete "
            f"{path if folder else path.parent} to have new credentials made at the next start"
        )


@contextlib.contextmanager
def _private_temporary(path: Path, data: bytes) -> Iterator[Path]:
    """`data` in a temporary file beside `path`, mode 0600 from the first byte (never a wider
    moment) and fsynced; removed at the end unless it was moved into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask did
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` privately, then move it into place: a crash leaves the old file
    or the new one, never half of one."""
    with _private_temporary(path, data) as tmp:
        os.replace(tmp, path)


def create_private(path: Path, data: bytes) -> bool:
    """Write `data` to `path` privately only if no file is there: linked into place, so of two
    writers at once one wins and the other keeps its hands off. False: one was there."""
    with _private_temporary(path, data) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True


def read_private(path: Path) -> bytes:
    """A secret file's bytes; CredentialsError when other users can read it or it cannot be
    read (the message names the file, never the content)."""
    _check_private(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"{path} cannot be read: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class Credentials:
    """The folder `<store>/credentials` and what it holds."""

    folder: Path

    @property
    def store(self) -> Path:
        return self.folder.parent

    def seed_file(self, role: str) -> Path:
        if role not in ROLES:
            raise CredentialsError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        return self.folder / f"{role}{SEED_SUFFIX}"

    def has_seed(self, role: str) -> bool:
        return self.seed_file(role).is_file()

    @property
    def api_token_file(self) -> Path:
        return self.folder / API_TOKEN_FILE

    @property
    def server_config_file(self) -> Path:
        return self.store / SERVER_CONFIG_FILE

    def api_token(self) -> str:
        token = read_private(self.api_token_file).decode().strip()
        if len(token) < 16:
            raise CredentialsError(f"{self.api_token_file} holds no usable token (delete it to "
                                   "have a new one made)")
        return token

    def public_keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for role in ROLES:
            path = self.seed_file(role)
            try:
                keys[role] = public_key(read_private(path))
            except CredentialsError as exc:
                if str(path) in str(exc):
                    raise
                raise CredentialsError(f"{path}: {exc}") from None
        return keys

    def write_server_config(self, names: Names) -> Path:
        """`<store>/nats-auth.conf` (0600): the role permissions with the nkey users; rewritten
        at every start, so a changed prefix or a new role version is picked up."""
        path = self.server_config_file
        text = ("# Written by trainbus up at every start from libs/events/roles.py and the public\n"
                f"# keys of {self.folder}/*{SEED_SUFFIX}. No anonymous user.\n"
                + render_nkeys(names, self.public_keys()))
        write_private(path, text.encode())
        return path


def ensure_credentials(store: Path, *, seeds: bool = True) -> Credentials:
    """`<store>/credentials` with a seed per role and the API token: made where missing, kept
    where present (a later start reuses them). `seeds=False`: the API token only (a stack on a
    server found at NATS_URL, whose users are not ours). Raises CredentialsError."""
    folder = Path(store) / CREDENTIALS_DIR
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        if not folder.is_dir():
            raise CredentialsError(f"{folder} is not a folder") from None
    else:
        os.chmod(folder, 0o700)  # whatever the umask did
    _check_private(folder, folder=True)
    creds = Credentials(folder)
    if seeds:
        for role in ROLES:
            path = creds.seed_file(role)
            if not path.exists():
                write_private(path, new_user_seed() + b"\n")
        creds.public_keys()  # every seed readable, private and valid, or a clear error now
    if not creds.api_token_file.exists():
        write_private(creds.api_token_file, secrets.token_urlsafe(32).encode() + b"\n")
    creds.api_token()
    return creds


def local_credentials(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials of the local `trainbus up` (TRAINBUS_STORE or ./.trainbus), when it
    made any; None otherwise."""
    folder = store_from_env(environ) / CREDENTIALS_DIR
    return Credentials(folder) if folder.is_dir() else None
