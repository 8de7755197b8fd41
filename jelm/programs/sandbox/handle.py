"""The parent's handle on one sandbox worker process (ELM §3: programs run in workers).

Starts ``python -I -S`` on :func:`jelm.programs.sandbox.worker.main`, keeps the pipes
non-blocking, buffers outgoing frames and splits incoming bytes into frames, and kills
and reaps the worker (its pid namespace with it).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from jelm.programs.sandbox.wire import OUT

__all__ = ["WorkerHandle"]

#: The directory ``jelm`` is imported from (prepended to the worker's ``sys.path``).
_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)


class WorkerHandle:
    """One worker: the ``python -I -S`` process pair and the parent's view of its queue.

    ``inflight`` holds the indices of the programs sent and not yet answered, oldest first
    (a worker answers in order); ``head_since`` is when the oldest started waiting.
    """

    def __init__(self, init_frame: bytes, index: int) -> None:
        code = (
            f"import sys; sys.path.insert(0, {_ROOT!r}); "
            "from jelm.programs.sandbox.worker import main; main()"
        )
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("JELM_SANDBOX_DEBUG") else subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        os.set_blocking(self.wfd, False)
        self.inner_pid: int | None = None
        self.layers: dict[str, Any] | None = None
        self.buf = bytearray()
        self.out = bytearray(init_frame)
        self.inflight: collections.deque[int] = collections.deque()
        self.head_since = time.monotonic()
        self.started = time.monotonic()
        self.dead = False

    @property
    def ready(self) -> bool:
        return self.layers is not None and not self.dead

    def flush(self) -> None:
        """Write as much of the outgoing buffer as the pipe takes without blocking."""
        while self.out:
            try:
                n = os.write(self.wfd, self.out)
            except BlockingIOError:
                return
            except (BrokenPipeError, OSError):
                self.dead = True
                self.out.clear()
                return
            del self.out[:n]

    def frames(self) -> list[tuple[int, bytes]]:
        """Read what is available and return the complete ``(kind, body)`` frames.

        EOF marks the worker dead (its zygote and manager are gone).
        """
        try:
            data = os.read(self.rfd, 1 << 20)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":
            self.dead = True
        elif data:
            self.buf += data
        out = []
        buf, hs = self.buf, OUT.size
        pos, n = 0, len(buf)
        while n - pos >= hs:
            kind, size = OUT.unpack_from(buf, pos)
            if n - pos - hs < size:
                break
            out.append((kind, bytes(buf[pos + hs : pos + hs + size])))
            pos += hs + size
        if pos:
            del buf[:pos]
        return out

    def kill(self) -> None:
        """SIGKILL the inner worker (and so its pid namespace) and the outer process."""
        self.dead = True
        for pid in (self.inner_pid, self.proc.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.reap()

    def reap(self) -> None:
        """Close the pipes and wait for the outer process (bounded)."""
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
