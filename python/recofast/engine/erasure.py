"""The right to erasure: users the engine has forgotten, remembered without their ids.

``recofast forget USER`` publishes a request on :data:`FORGET_SUBJECT` (part of the event
stream, so it is applied in order with the events around it and survives a restart). The
engine then removes the user from the model, the LMDB lists, the KV bucket and every kept
checkpoint, and adds a *tombstone*: a keyed BLAKE2b hash of the id, so that a replay of the
stream (a restart from an older checkpoint, a rollback with ``--replay``) drops the user's
events instead of learning them again. The key (a random salt) and the hashes live in
``<model_dir>/forgotten``; the id itself is stored nowhere.

>>> import tempfile
>>> t = Tombstones(tempfile.mkdtemp())
>>> t.add("alice"), "alice" in t, "bob" in t, len(t)
(True, True, False, 1)
>>> Tombstones(t.dir).__contains__("alice")   # it persists
True
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import msgspec

FILE = "forgotten"
_MAGIC = b"RFTOMB1\n"
_SALT = 16
_DIGEST = 16


class ForgetRequest(msgspec.Struct):
    """The message of ``recofast forget``: ``{"v": 1, "user": "..."}``."""

    v: int
    user: str


_decoder = msgspec.json.Decoder(ForgetRequest)


def decode_forget(body: bytes) -> ForgetRequest:
    """Raises ValueError on a malformed request."""
    try:
        r = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ValueError(f"not a forget request: {e}") from None
    if r.v != 1 or not r.user:
        raise ValueError("a forget request needs v = 1 and a user")
    return r


def encode_forget(user: str) -> bytes:
    return msgspec.json.encode(ForgetRequest(v=1, user=user))


class Tombstones:
    """Keyed hashes of forgotten user ids, kept in ``<dir>/forgotten`` (append-only:
    magic, salt, then one digest per user; each add is fsynced)."""

    def __init__(self, dir: str | os.PathLike[str]) -> None:
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / FILE
        self._hashes: set[bytes] = set()
        if self.path.is_file():
            data = self.path.read_bytes()
            if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _SALT:
                raise ValueError(f"{self.path} is not a tombstone file")
            self.salt = data[len(_MAGIC) : len(_MAGIC) + _SALT]
            body = data[len(_MAGIC) + _SALT :]
            body = body[: len(body) - len(body) % _DIGEST]  # a torn last append is dropped
            self._hashes = {body[i : i + _DIGEST] for i in range(0, len(body), _DIGEST)}
        else:
            self.salt = secrets.token_bytes(_SALT)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(_MAGIC + self.salt)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def _hash(self, user: str) -> bytes:
        return hashlib.blake2b(user.encode("utf-8", "surrogatepass"), key=self.salt, digest_size=_DIGEST).digest()

    def __contains__(self, user: str) -> bool:
        return bool(self._hashes) and self._hash(user) in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def add(self, user: str) -> bool:
        """Remembers ``user`` as forgotten; False if it already was."""
        h = self._hash(user)
        if h in self._hashes:
            return False
        with open(self.path, "ab") as f:
            f.write(h)
            f.flush()
            os.fsync(f.fileno())
        self._hashes.add(h)
        return True


async def forget(url: str, users: list[str], wait: float = 30.0) -> list[str]:
    """Publishes a forget request for each user into the event stream and, with ``wait`` >
    0, waits until the engine confirms each on ``recofast.forgotten``. Returns the users
    confirmed (all of them when ``wait`` is 0: the requests are stored in the stream)."""
    import asyncio

    import nats
    from recofast_sidecar.protocol.names import (
        FORGET_SUBJECT,
        FORGOTTEN_SUBJECT,
        MSG_ID_HEADER,
    )

    async with await nats.connect(url, connect_timeout=5, max_reconnect_attempts=2) as nc:
        js = nc.jetstream()
        confirmed: set[str] = set()
        done = asyncio.Event()
        want = set(users)

        async def on_confirm(msg) -> None:  # noqa: ANN001
            try:
                confirmed.add(decode_forget(msg.data).user)
            except ValueError:
                return
            if want <= confirmed:
                done.set()

        sub = await nc.subscribe(FORGOTTEN_SUBJECT, cb=on_confirm) if wait > 0 else None
        from nats.js.errors import NoStreamResponseError

        for u in users:
            try:
                await js.publish(FORGET_SUBJECT, encode_forget(u), headers={MSG_ID_HEADER: f"forget-{secrets.token_hex(8)}"})
            except NoStreamResponseError:
                raise ValueError(f"no event stream on {url} takes {FORGET_SUBJECT}: has an engine run there?") from None
        if sub is None:
            return list(users)
        try:
            await asyncio.wait_for(done.wait(), wait)
        except asyncio.TimeoutError:
            pass
        await sub.unsubscribe()
        return [u for u in users if u in confirmed]






__all__ = ["FILE", "ForgetRequest", "Tombstones", "decode_forget", "encode_forget", "forget"]
