"""The process's budget for request bodies in flight (`KDC_MAX_BODY_BYTES_IN_FLIGHT`).

Every body a handler reads is held in memory while it arrives (an upload, a polling POST);
per-request limits alone let many concurrent requests add up (16 × 20 MiB uploads, 8 × 34 MiB
polling POSTs). An exchange reserves its declared `Content-Length` before reading (a chunked
body: each chunk as it arrives) and gives the reservation back when the request ends, however
it ends. A reservation that does not fit is refused at once: the client gets 503 with
`Retry-After` (or 413 when the body alone is larger than the whole budget), and nothing waits.
"""

from __future__ import annotations

from kdc_trio.server.request import HTTPError

# The error name of a refusal; the connection skips draining such a body (it is over budget).
BUDGET_ERROR = "body_budget_exhausted"
LIMIT = "KDC_MAX_BODY_BYTES_IN_FLIGHT"
# Seconds a refused client is asked to wait: bodies in flight finish within a read deadline.
RETRY_AFTER_S = 1


class BodyBudget:
    """Bytes of request bodies being received or held by their request, per process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0 = no budget
        self.in_use = 0
        self.peak = 0
        self.refused = 0

    def reserve(self, n: int) -> None:
        """Take `n` bytes or raise the HTTPError to answer (503 busy, 413 never fits)."""
        if not self.limit or n <= 0:
            return
        if n > self.limit:
            self.refused += 1
            raise HTTPError(413, "payload_too_large",
                            f"a body of {n} bytes is over the {self.limit}-byte budget for bodies in flight "
                            "(KDC_MAX_BODY_BYTES_IN_FLIGHT)", limit=LIMIT)
        if self.in_use + n > self.limit:
            self.refused += 1
            raise HTTPError(503, BUDGET_ERROR,
                            f"{self.in_use} of {self.limit} bytes of request bodies are in flight in this process "
                            "(KDC_MAX_BODY_BYTES_IN_FLIGHT); retry shortly", limit=LIMIT,
                            retry_after=RETRY_AFTER_S, headers=[("connection", "close")])
        self.in_use += n
        self.peak = max(self.peak, self.in_use)

    def release(self, n: int) -> None:
        if self.limit and n > 0:
            self.in_use -= n
