"""One writer per output: the guard every stage takes around what it writes.

Two runs of the same command on the same output (two terminals, or a scheduler that
retried a job it thought was dead) would both append to the same partial shards and both
rename them into place: duplicated records in files that look complete, and a traceback
in whichever run lost the race. ``single_writer`` makes the second run stop before it
writes anything, with one line naming the run that holds the output (pid, host, command,
start time), or wait for it (``wait=True``, the CLI's ``--wait``).

How it works, and why it is safe when a holder dies:

* the lock is ``fcntl.flock`` on a small lock file; the kernel drops a flock when the
  process that holds it exits for any reason (kill -9 included), so a dead run never
  blocks the next one;
* after taking the flock, the holder writes who it is (pid, host, command, start time)
  into the lock file, for the message other runs print; on release it deletes the file
  first, then drops the flock. A waiter that took the flock of a file that is no longer
  at the path (deleted or replaced meanwhile) lets go and tries again, so two runs can
  never hold two different files of the same path;
* a lock file that still names a holder when its flock is free was left by a run that
  died. On the same host the kernel's answer is authoritative: the flock is free, so the
  holder is gone (its pid is checked too, for the log line) and the lock is taken over.

A run that writes for hours (training) also asks, before each write, whether it still
holds the lock (``Lease.confirm``): a lock file deleted or replaced under it (a cleanup
script, a user) lets a second run start, so the first one stops at its next write rather
than write beside it.

Across hosts: on a network file system flock may be local to each client (NFS mounted
with ``local_lock=flock`` or ``nolock``, some FUSE file systems), so a run on host B can
take a flock that a live run on host A holds. A lock file naming *another* host with a
free flock therefore cannot be told apart from one left by a run that died there: it is
refused, and the message says so and names the file to delete once that run is known to
be over. Where the file system does share flock (local disks, NFSv4 with locking),
a live holder on any host is refused by the flock itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from distill.core.errors import DistillError
from distill.core.shards import process_alive

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
POLL_SECONDS = 0.2
NOTE_EVERY_SECONDS = 30.0


class OutputLockedError(DistillError):
    """Another run writes to this output (the CLI prints it as one line and exits 2)."""


class LockLostError(OutputLockedError):
    """The lock file of a running writer was deleted or replaced: it stops writing."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock, as recorded in its lock file."""

    pid: int
    host: str
    command: str
    started: str

    @classmethod
    def me(cls) -> Holder:
        program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
        # `python -m distill` runs distill/__main__.py: name the package, not the file.
        name = program.parent.name if program.name == "__main__.py" else program.name
        command = " ".join(shlex.quote(arg) for arg in [name, *sys.argv[1:]])
        return cls(os.getpid(), socket.gethostname(), command,
                   datetime.now(UTC).isoformat(timespec="seconds"))

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["command"]),
                       str(data["started"]))
        except (ValueError, KeyError, TypeError, RecursionError):
            return None

    def dumps(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "command": self.command,
                           "started": self.started}) + "\n"

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}: {self.command}"


def lock_path_for(folder: Path | str) -> Path:
    """The lock file of an output folder: ``FOLDER/.lock``."""
    return Path(folder) / LOCK_NAME


def lock_path_beside(path: Path | str) -> Path:
    """The lock file of an output that is replaced whole by a rename (an ingest folder):
    ``PARENT/.NAME.lock``, which survives the rename."""
    path = Path(path)
    return path.parent / f".{path.name}{LOCK_NAME}"


@dataclass
class Lease:
    """A held lock (``writer_lease``): who holds it, and the open lock file whose flock
    is the lock."""

    lock_file: Path
    what: str
    holder: Holder
    handle: TextIO

    def confirm(self) -> None:
        """Raise ``LockLostError`` unless the lock file at its path is still the one this
        run locked. Called before each write of a long run: once the file was deleted or
        replaced, another run may have started (or even finished) here, so this one must
        not write again; a rerun (``--resume``) takes the lock afresh."""
        if _same_file(self.handle, self.lock_file):
            return
        now = read_holder(self.lock_file)
        by = f"; it now names {now.describe()}" if now is not None and now != self.holder \
            else ""
        raise LockLostError(f"the lock file {self.lock_file} of {self.what} was deleted or "
                            f"replaced while this run held it{by}; this run stops so that "
                            f"two runs never write there (rerun to continue)")


@contextlib.contextmanager
def single_writer(lock_file: Path | str, what: str, *, wait: bool = False,
                  refuse_other_hosts: bool = True,
                  note: Callable[[str], None] | None = None,
                  poll_s: float = POLL_SECONDS) -> Iterator[Holder]:
    """``writer_lease`` for a body that needs only who holds the lock."""
    with writer_lease(lock_file, what, wait=wait, refuse_other_hosts=refuse_other_hosts,
                      note=note, poll_s=poll_s) as lease:
        yield lease.holder


@contextlib.contextmanager
def writer_lease(lock_file: Path | str, what: str, *, wait: bool = False,
                 refuse_other_hosts: bool = True,
                 note: Callable[[str], None] | None = None,
                 poll_s: float = POLL_SECONDS) -> Iterator[Lease]:
    """Hold ``lock_file`` for the body: the only writer of ``what`` (a folder, a store).

    Raises ``OutputLockedError`` (one line: who holds it) when another run does, unless
    ``wait``: then polls until it is free, calling ``note`` (default: a log warning) once
    at the start and every 30 s with who it waits for.

    ``refuse_other_hosts=False`` trusts a free flock even when the file names another
    host. Stages keep the default (refuse); a shard's lock inside a run that already holds
    its stage's lock passes False: there the only other writer can be a worker of the
    same run that outlived its lost node, and waiting forever on a dead host's record
    would stall the retry of its shard.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    say = note or log.warning
    me = Holder.me()
    waited_since: float | None = None
    last_note = 0.0
    while True:
        handle, reason = _try_acquire(lock_file, what, me, refuse_other_hosts)
        if handle is not None:
            break
        if not wait:
            raise OutputLockedError(f"{reason}; wait for it to finish or pass --wait")
        now = time.monotonic()
        if waited_since is None:
            waited_since = now
        if now - last_note >= NOTE_EVERY_SECONDS:
            say(f"waiting: {reason} ({now - waited_since:.0f} s so far)")
            last_note = now
        time.sleep(poll_s)
    lease = Lease(lock_file, what, me, handle)
    try:
        yield lease
    finally:
        _release(lock_file, lease.handle)


@contextlib.contextmanager
def no_writer(lock_file: Path | str, what: str, *, wait: bool = False,
              note: Callable[[str], None] | None = None,
              poll_s: float = POLL_SECONDS) -> Iterator[None]:
    """For the body, keep any run from taking ``lock_file`` (a shared flock, which other
    readers share and a writer's exclusive one excludes), without writing or creating it.
    A run that holds it now is refused in one line, or waited for with ``wait``.

    For a folder inside an output another run may hold as a whole (a seed's run folder
    inside the ``--seeds`` group's): the inner run holds this only until it holds its own
    lock, so runs in sibling folders never exclude each other."""
    lock_file = Path(lock_file)
    say = note or log.warning
    waited_since = last_note = None
    while True:
        try:
            fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            yield  # no lock file: no one holds it
            return
        except OSError as exc:
            raise DistillError(f"cannot open lock file {lock_file}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            reason = _busy_reason(lock_file, what)
            if not wait:
                raise OutputLockedError(f"{reason}; wait for it to finish or pass --wait") \
                    from None
            now = time.monotonic()
            waited_since = waited_since or now
            if last_note is None or now - last_note >= NOTE_EVERY_SECONDS:
                say(f"waiting: {reason} ({now - waited_since:.0f} s so far)")
                last_note = now
            time.sleep(poll_s)
            continue
        try:
            yield
        finally:
            os.close(fd)
        return


def read_holder(lock_file: Path | str) -> Holder | None:
    """Who the lock file names (None when absent, empty or unreadable)."""
    try:  # a record is ours, in ASCII JSON; other bytes there are no record
        return Holder.parse(Path(lock_file).read_bytes().decode("utf-8", errors="replace"))
    except OSError:
        return None


def _try_acquire(lock_file: Path, what: str, me: Holder, refuse_other_hosts: bool
                 ) -> tuple[TextIO | None, str]:
    handle = _open_lock_file(lock_file)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None, _busy_reason(lock_file, what)
    try:
        if not _same_file(handle, lock_file):  # deleted or replaced while we waited
            handle.close()
            return None, f"{what} changed hands; retrying"
        handle.seek(0)
        previous = Holder.parse(handle.read())
        if previous is not None and not previous.on_this_host and refuse_other_hosts:
            handle.close()
            return None, (f"{what} is locked by {previous.describe()} -- a run on another "
                          f"host, whose lock cannot be checked from here (flock may not be "
                          f"shared on this file system); if that run is over, delete "
                          f"{lock_file}")
        if previous is not None and previous.pid != me.pid:
            state = ("not checked: another host" if not previous.on_this_host else
                     "dead" if not process_alive(previous.pid) else "no longer holding it")
            log.warning("taking over the lock of %s: %s (%s)", what, previous.describe(), state)
        handle.seek(0)
        handle.truncate()
        handle.write(me.dumps())
        handle.flush()
        os.fsync(handle.fileno())
    except BaseException:
        handle.close()
        raise
    return handle, ""


def _open_lock_file(lock_file: Path) -> TextIO:
    """Open (or create) the lock file itself, never what a link there points to.

    The holder record is written into this file, so a symlink planted at the lock path
    would make the run overwrite any file the user can write (O_NOFOLLOW refuses it). A
    folder, FIFO or device at the path is refused too: only a regular file is a lock.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(lock_file, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DistillError(f"lock file {lock_file} is a symbolic link; a lock must be a "
                               f"regular file: remove the link and run again") from None
        if exc.errno == errno.EISDIR:
            raise DistillError(f"lock file {lock_file} is a folder; a lock must be a regular "
                               f"file: remove the folder and run again") from None
        raise DistillError(f"cannot open lock file {lock_file}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DistillError(f"lock file {lock_file} is not a regular file; remove it and "
                           f"run again")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a+", encoding="utf-8", errors="replace")  # any bytes: no record


def _busy_reason(lock_file: Path, what: str) -> str:
    holder = None
    for _ in range(5):  # the holder may be between taking the flock and writing its name
        holder = read_holder(lock_file)
        if holder is not None:
            break
        time.sleep(0.02)
    if holder is None:
        return f"another run is writing to {what} (its lock file {lock_file} names no one yet)"
    where = "" if holder.on_this_host else " (another host)"
    return f"another run is writing to {what}: {holder.describe()}{where}"


def _release(lock_file: Path, handle: TextIO) -> None:
    try:
        if _same_file(handle, lock_file):
            lock_file.unlink(missing_ok=True)
    finally:
        handle.close()  # drops the flock


def _same_file(handle: TextIO, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

