"""Several OpenAI-compatible servers with no load balancer in front: pick one per request.

Teacher fleets are often a few ``vllm serve`` processes on a few machines. The openai
engine sends each request to the server with the fewest requests in flight (ties: the
one sent the fewest so far), so a slow server gets less work without any tuning.

A server that stops answering (refused or dropped connections, timeouts) is taken out of
the rotation: the request that saw it fail is retried at once on another server, without
using one of its attempts, and the server stays out for a cool-down that doubles with
each failed probe (``cooldown_s`` up to ``cooldown_max_s``). After the cool-down one
request probes it; an answer puts it back in the rotation. A server that answers with an
HTTP error is up (it answered): its 429s and 5xx go through the usual backoff.

With a single server nothing is ever taken out (there is nowhere else to go): failures
are retried with backoff exactly as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Server:
    url: str
    in_flight: int = 0
    sent: int = 0
    answered: int = 0
    unreachable: int = 0  # failed requests (transport errors, timeouts), all time
    strikes: int = 0  # consecutive failures: sets the cool-down
    down_until: float | None = None  # None: in the rotation
    probing: bool = False
    outages: int = 0  # times taken out of the rotation

    def stats(self) -> dict[str, int | str | bool]:
        return {"url": self.url, "sent": self.sent, "answered": self.answered,
                "unreachable": self.unreachable, "outages": self.outages,
                "in_rotation": self.down_until is None}


class Fleet:
    """The servers of one engine and their health; used from one event loop at a time."""

    def __init__(self, urls: list[str], cooldown_s: float, cooldown_max_s: float) -> None:
        self.servers = [Server(url.rstrip("/")) for url in urls]
        self.cooldown_s = cooldown_s
        self.cooldown_max_s = max(cooldown_s, cooldown_max_s)

    @property
    def single(self) -> bool:
        return len(self.servers) == 1

    async def acquire(self) -> Server:
        """The server for the next request (waits while every server is out)."""
        while True:
            now = time.monotonic()
            server = self._pick(now)
            if server is not None:
                server.in_flight += 1
                server.sent += 1
                return server
            waits = [s.down_until - now for s in self.servers
                     if s.down_until is not None and not s.probing]
            await asyncio.sleep(min(max(min(waits, default=0.05), 0.01), 1.0))

    def _pick(self, now: float) -> Server | None:
        for server in self.servers:  # a server whose cool-down is over: one probe
            if server.down_until is not None and now >= server.down_until and \
                    not server.probing:
                server.probing = True
                return server
        up = [s for s in self.servers if s.down_until is None]
        return min(up, key=lambda s: (s.in_flight, s.sent)) if up else None

    def release(self, server: Server) -> None:
        server.in_flight -= 1

    def answered(self, server: Server) -> None:
        """It answered (with anything): in the rotation."""
        server.answered += 1
        server.strikes = 0
        if server.down_until is not None:
            log.warning("%s answers again; back in the rotation", server.url)
        server.down_until = None
        server.probing = False

    def unreachable(self, server: Server) -> bool:
        """It did not answer. Take it out (unless it is the only one); True when another
        server is in the rotation, so the request fails over at once."""
        server.unreachable += 1
        if self.single:
            return False
        if server.down_until is None:  # the first failure seen while it was in
            server.strikes = 1
            server.outages += 1
        elif server.probing:  # its probe failed: stay out longer
            server.strikes += 1
        else:  # a request sent before it went out: already counted
            return self._any_up()
        server.probing = False
        cooldown = min(self.cooldown_max_s, self.cooldown_s * 2 ** (server.strikes - 1))
        if server.strikes == 1:
            log.warning("%s stopped answering; out of the rotation (probed again in %.1f s)",
                        server.url, cooldown)
        server.down_until = time.monotonic() + cooldown
        return self._any_up()

    def _any_up(self) -> bool:
        return any(s.down_until is None for s in self.servers)

    def stats(self) -> list[dict[str, int | str | bool]]:
        return [server.stats() for server in self.servers]
