"""CurveZMQ keys for the pose stream.

CURVE encrypts the stream and, when the server keeps a folder of allowed client public keys,
authenticates subscribers. Keys are the ZeroMQ certificate files pyzmq and czmq use:
``<name>.key`` holds the public key (safe to share), ``<name>.key_secret`` holds both keys and
must stay private (mode 0600).

A server (:class:`CurveServer`) needs its secret file and, optionally, a folder of client
``*.key`` files; a client (:class:`CurveClient`) needs its own secret file and the server's
public ``.key`` file.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from posed.errors import PublishError

__all__ = ["CurveClient", "CurveServer", "generate_keys", "load_public_key", "load_secret_keys",
           "warn_if_exposed"]

log = logging.getLogger(__name__)

# Z85-encoded CURVE keys are always 40 characters of this alphabet.
_Z85_KEY = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """Read a certificate file, turning every failure into a one-line PublishError."""
    if not path.is_file():
        raise PublishError(f"{path}: no such key file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        reason = _one_line(exc).replace(f" in {path}", "").replace(str(path), "it")
        raise PublishError(f"{path}: cannot read key file ({reason})") from exc
    if not _Z85_KEY.match(public):
        raise PublishError(f"{path}: public key is not a 40-character Z85 CURVE key")
    if secret is not None and not _Z85_KEY.match(secret):
        raise PublishError(f"{path}: secret key is not a 40-character Z85 CURVE key")
    return public, secret


def load_secret_keys(path: str | Path) -> tuple[bytes, bytes]:
    """Load a key pair from a ``.key_secret`` file.

    Args:
        path: The secret certificate file.

    Returns:
        ``(public_key, secret_key)``, Z85-encoded.

    Raises:
        PublishError: The file is missing, unreadable or holds no secret key.
    """
    path = Path(path)
    public, secret = _read_certificate(path)
    if secret is None:
        raise PublishError(f"{path}: holds no secret key (use the .key_secret file)")
    return public, secret


def warn_if_exposed(path: str | Path) -> bool:
    """Log one warning, as ssh does, when a secret key file is open to group or others.

    Returns:
        Whether the file's mode lets anyone but its owner read or change it.
    """
    try:
        mode = stat.S_IMODE(Path(path).stat().st_mode)
    except OSError:
        return False  # loading the key reports a missing or unreadable file
    if not mode & 0o077:
        return False
    log.warning("%s: permissions %04o are too open: others can read this secret key "
                "(chmod 600 it)", path, mode)
    return True


def load_public_key(path: str | Path) -> bytes:
    """Load the public key from a ``.key`` (or ``.key_secret``) file.

    Args:
        path: The certificate file.

    Returns:
        The Z85-encoded public key.

    Raises:
        PublishError: The file is missing or unreadable.
    """
    return _read_certificate(Path(path))[0]


def generate_keys(directory: str | Path, name: str = "server") -> tuple[Path, Path]:
    """Create a CURVE key pair as ``<directory>/<name>.key`` and ``<name>.key_secret``.

    The pair is generated in a private temporary folder and moved into place, so the secret
    file is never readable by others, not even briefly. Existing files are never overwritten.

    Args:
        directory: Destination folder (created if missing).
        name: Base name of the two files.

    Returns:
        ``(public_key_file, secret_key_file)``.

    Raises:
        PublishError: A file of that name exists, the name is not a plain file name, or the
            files cannot be written.
    """
    directory = Path(directory)
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise PublishError(f"{name!r}: key name must be a plain file name")
    public = directory / f"{name}.key"
    secret = directory / f"{name}.key_secret"
    for target in (public, secret):
        if target.exists():
            raise PublishError(f"{target}: already exists; not overwriting a key")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # mkdtemp makes a 0700 folder in the same file system, so the rename below is atomic.
        with tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}.keys-") as tmp:
            tmp_public, tmp_secret = zmq.auth.create_certificates(tmp, name)
            os.chmod(tmp_secret, 0o600)
            os.chmod(tmp_public, 0o644)
            # os.link fails if the target exists, so a concurrent run cannot be clobbered.
            os.link(tmp_secret, secret)
            try:
                os.link(tmp_public, public)
            except OSError:
                secret.unlink(missing_ok=True)
                raise
    except FileExistsError as exc:
        raise PublishError(f"{exc.filename2 or exc.filename}: already exists; "
                           "not overwriting a key") from exc
    except OSError as exc:
        raise PublishError(f"{directory}: cannot write keys ({_one_line(exc)})") from exc
    return public, secret


@dataclass
class CurveServer:
    """CURVE settings of the publishing side.

    Attributes:
        secret_key_file: The server's ``.key_secret`` file.
        allowed_clients_dir: Folder of client public ``*.key`` files allowed to subscribe;
            ``None`` lets any client that knows the server's public key subscribe (the stream
            is still encrypted).
    """

    secret_key_file: Path
    allowed_clients_dir: Path | None = None

    def __post_init__(self) -> None:
        self.secret_key_file = Path(self.secret_key_file)
        if self.allowed_clients_dir is not None:
            self.allowed_clients_dir = Path(self.allowed_clients_dir)

    def load(self) -> tuple[bytes, bytes]:
        """Read and check the key files.

        Returns:
            ``(public_key, secret_key)`` of the server.

        Raises:
            PublishError: A key file or the allowed-clients folder is missing or unreadable.
        """
        keys = load_secret_keys(self.secret_key_file)
        folder = self.allowed_clients_dir
        if folder is not None:
            # pyzmq's authenticator only logs a bad folder and then refuses everyone; say so
            # up front instead.
            if not folder.is_dir():
                raise PublishError(f"{folder}: allowed-clients folder does not exist")
            for key_file in folder.glob("*.key"):
                load_public_key(key_file)
        return keys


@dataclass
class CurveClient:
    """CURVE settings of a subscriber.

    Attributes:
        secret_key_file: The client's own ``.key_secret`` file.
        server_public_key_file: The server's public ``.key`` file.
    """

    secret_key_file: Path
    server_public_key_file: Path

    def __post_init__(self) -> None:
        self.secret_key_file = Path(self.secret_key_file)
        self.server_public_key_file = Path(self.server_public_key_file)

    def load(self) -> tuple[bytes, bytes, bytes]:
        """Read and check the key files.

        Returns:
            ``(public_key, secret_key, server_public_key)``.

        Raises:
            PublishError: A key file is missing or unreadable.
        """
        public, secret = load_secret_keys(self.secret_key_file)
        warn_if_exposed(self.secret_key_file)
        return public, secret, load_public_key(self.server_public_key_file)

    def apply(self, socket: zmq.Socket) -> None:
        """Configure ``socket`` as a CURVE client (before it connects)."""
        public, secret, server = self.load()
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_serverkey = server
