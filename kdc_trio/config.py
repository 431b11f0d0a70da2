"""One frozen Settings object, read from the environment.

Every limit and timeout of the gateway is a field here, with its environment name and a
default chosen for a small single-process deployment. The README's Configuration table
lists them all; `tests/test_config.py` checks that the two agree.
KDCube's names are used where they exist; new settings are `KDC_*`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

MiB = 1024 * 1024


def _bool(v: str) -> bool:
    s = v.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def _csv(v: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in v.split(",") if p.strip())


def _fraction(v: str) -> float:
    f = float(v)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"not a fraction between 0 and 1: {v!r}")
    return f


def _recovery_mode(v: str) -> str:
    v = v.strip().lower()
    if v not in ("auto", "on", "off"):
        raise ValueError(f"not one of auto, on, off: {v!r}")
    return v


def _key_prefix(v: str) -> str:
    """A Redis key prefix: no `{` `}` (they would become the hash tag of every key under Cluster)."""
    if not v or "{" in v or "}" in v:
        raise ValueError(f"must be non-empty, without {{ or }}: {v!r}")
    return v


def _opt_str(v: str) -> str | None:
    return v or None


def setting(env: str, default: Any, parse: Callable[[str], Any] | None = None, doc: str = "") -> Any:
    """A dataclass field that knows its environment variable, parser and one-line doc."""
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True, kw_only=True)
class Settings:
    # --- server ---------------------------------------------------------------------------
    host: str = setting("KDC_HOST", "127.0.0.1", doc="Address to listen on")
    port: int = setting("KDC_PORT", 8010, int, "TCP port to listen on (0 = any free port)")
    max_header_bytes: int = setting(
        "KDC_MAX_HEADER_BYTES", 16 * 1024, int, "Request line + headers limit; larger → 431")
    max_body_bytes: int = setting(
        "KDC_MAX_BODY_BYTES", 0, int,
        "Request body limit; larger → 413. 0 = derived: MESSAGE_MAX_BYTES + 1 MiB of form overhead")
    max_body_bytes_in_flight: int = setting(
        "KDC_MAX_BODY_BYTES_IN_FLIGHT", 256 * MiB, int,
        "Request bodies being received per process (each reserves its Content-Length); past it → 503 + "
        "Retry-After, a body larger than the whole budget → 413. 0 = no budget")
    read_timeout_s: float = setting(
        "KDC_READ_TIMEOUT_S", 30.0, float,
        "Deadline to receive the request line and headers; also the longest silence while a body arrives")
    body_timeout_s: float = setting(
        "KDC_BODY_TIMEOUT_S", 120.0, float,
        "Deadline to receive a whole request body, from the end of its headers; past it → 408 and close")
    keepalive_timeout_s: float = setting(
        "KDC_KEEPALIVE_TIMEOUT_S", 15.0, float, "Idle time allowed between requests on a kept-alive connection")
    write_timeout_s: float = setting(
        "KDC_WRITE_TIMEOUT_S", 10.0, float,
        "Deadline for a client to take each 64 KiB of a write; a client that stops reading is dropped when it passes")
    write_through: bool = setting(
        "KDC_WRITE_THROUGH", True, _bool,
        "The relay writes events to an idle connection's socket itself, once the producers running now have "
        "yielded (what they emitted meanwhile shares one non-blocking send); what does not fit goes to the "
        "connection's writer, under KDC_WRITE_TIMEOUT_S; 0 = every event through the writer")
    gc_young_threshold: int = setting(
        "KDC_GC_YOUNG_THRESHOLD", 10_000, int,
        "`kdc-trio serve` and `kdc-trio worker`: net allocations between young garbage collections, set once "
        "start-up is done (CPython's default: 700; 0 or less = leave the interpreter's)")
    shutdown_grace_s: float = setting(
        "KDC_SHUTDOWN_GRACE_S", 5.0, float, "On SIGINT/SIGTERM: time streams get to end before they are cancelled")
    reuse_port: bool = setting(
        "KDC_REUSE_PORT", False, _bool,
        "Listen with SO_REUSEPORT so several processes share the port (`serve --workers N` sets it)")
    worker_index: int = setting(
        "KDC_WORKER_INDEX", -1, int, "This process's index under `serve --workers N` (set by the supervisor; -1 = alone)")
    max_connections: int = setting(
        "KDC_MAX_CONNECTIONS", 0, int,
        "Open TCP connections per process; past it new ones are closed at once. 0 = derived: RLIMIT_NOFILE less "
        "a tenth kept for other descriptors; a larger value is clamped to that (logged)")
    max_connections_per_address: int = setting(
        "KDC_MAX_CONNECTIONS_PER_ADDRESS", 0, int,
        "Open TCP connections per client address; past it new ones are closed at once. 0 = half the process cap")
    cors_origins: tuple[str, ...] = setting(
        "KDC_CORS_ORIGINS", (), _csv,
        "Comma-separated origins allowed cross-site (listed ones with credentials); `*` = any origin without "
        "credentials. Empty = same-origin only (README: Origins)")
    trust_forwarded_proto: bool = setting(
        "KDC_TRUST_FORWARDED_PROTO", False, _bool,
        "Believe `X-Forwarded-Proto` (set it behind a TLS proxy that sets it): `https` makes the session cookie "
        "`Secure` and is the scheme of the gateway's own origin")
    metrics_token: str | None = setting(
        "KDC_METRICS_TOKEN", None, _opt_str, "If set, `GET /metrics` needs `Authorization: Bearer <it>` (else 401)")

    demo_page: bool = setting(
        "KDC_DEMO_PAGE", True, _bool, "Serve the demo page at `/` (`0`: no page, `/` is a 404)")

    # --- SSE ------------------------------------------------------------------------------
    sse_heartbeat_s: float = setting("KDC_SSE_HEARTBEAT_S", 15.0, float, "Heartbeat comment interval on idle SSE streams")
    sse_retry_ms: int = setting("KDC_SSE_RETRY_MS", 3000, int, "`retry:` hint sent to EventSource clients")
    max_sse_connections: int = setting(
        "KDC_MAX_SSE_CONNECTIONS", 10000, int, "SSE streams per process; past it a new stream gets 429 + Retry-After")
    client_queue: int = setting(
        "SSE_CLIENT_QUEUE", 1000, int,
        "Outbox depth of one connection (SSE or Socket.IO); a full outbox that merging cannot shrink closes it")
    outbox_merge_at: float = setting(
        "KDC_OUTBOX_MERGE_AT", 0.5, _fraction,
        "Fraction of SSE_CLIENT_QUEUE waiting past which a slow connection's queued deltas merge (0: always)")

    # --- auth -----------------------------------------------------------------------------
    jwt_secret: str | None = setting("KDC_JWT_SECRET", None, _opt_str, "HS256 secret (also used by `kdc-trio token`)")
    jwt_public_key_file: str | None = setting(
        "KDC_JWT_PUBLIC_KEY_FILE", None, _opt_str, "PEM public key for RS256/ES256 tokens")
    jwks_file: str | None = setting("KDC_JWKS_FILE", None, _opt_str, "JWKS file; the token's `kid` picks the key")
    jwt_algorithms: tuple[str, ...] = setting(
        "KDC_JWT_ALGORITHMS", ("HS256", "RS256", "ES256"), _csv, "Accepted algorithms (never `none`)")
    jwt_issuer: str | None = setting("KDC_JWT_ISSUER", None, _opt_str, "Required `iss`, if set")
    jwt_audience: str | None = setting("KDC_JWT_AUDIENCE", None, _opt_str, "Required `aud`, if set")
    jwt_leeway_s: float = setting(
        "KDC_JWT_LEEWAY_S", 30.0, float,
        "Clock leeway for `exp`/`nbf`/`iat`; a live connection also ends at its token's `exp` + this")
    auth_expiring_notice_s: float = setting(
        "KDC_AUTH_EXPIRING_NOTICE_S", 60.0, float,
        "A live connection gets `chat_service` `auth.expiring` this long before its token's deadline (refresh in-band)")
    roles_claim: str = setting(
        "KDC_ROLES_CLAIM", "roles", doc="Claim holding roles (dotted path); `realm_access.roles` and "
        "`cognito:groups` are also read")
    privileged_roles: tuple[str, ...] = setting(
        "KDC_PRIVILEGED_ROLES", ("kdcube:role:super-admin", "admin"), _csv,
        "Roles that make a session `privileged`")
    auth_token_cookie: str = setting("AUTH_TOKEN_COOKIE_NAME", "__Secure-LATC", doc="Access-token cookie")
    id_token_header: str = setting("ID_TOKEN_HEADER_NAME", "X-ID-Token", doc="ID-token header")
    id_token_cookie: str = setting("ID_TOKEN_COOKIE_NAME", "__Secure-LITC", doc="ID-token cookie")
    sse_reject_anonymous: bool = setting(
        "CHAT_SSE_REJECT_ANONYMOUS", False, _bool, "Refuse SSE streams and chat posts without a token (401)")
    ws_reject_anonymous: bool = setting(
        "CHAT_WS_REJECT_ANONYMOUS", False, _bool, "Refuse Socket.IO connects without a token (CONNECT_ERROR)")

    # --- tenancy and sessions -------------------------------------------------------------
    default_tenant: str = setting("KDC_DEFAULT_TENANT", "home", doc="Tenant when a client names none")
    default_project: str = setting("KDC_DEFAULT_PROJECT", "demo", doc="Project when a client names none")
    session_ttl_s: int = setting(
        "KDC_SESSION_TTL_S", 86400, int,
        "Session lifetime since last activity (a request that changes nothing in its session rewrites it, "
        "refreshing this, at most once a minute or once per 1 % of it)")
    memory_max_sessions: int = setting(
        "KDC_MEMORY_MAX_SESSIONS", 200_000, int,
        "Sessions the embedded (memory) store keeps; past it the least recently stored is evicted")
    memory_max_conversations: int = setting(
        "KDC_MEMORY_MAX_CONVERSATIONS", 100_000, int,
        "Conversation statuses the embedded (memory) store keeps; past it the least recently written is evicted")
    session_cookie: str = setting(
        "KDC_SESSION_COOKIE", "kdc_session", doc="Sticky session cookie (HttpOnly) set by `/profile`, `/sse/stream` "
        "and `/sse/chat`; a post without a session id uses it. Empty = off")
    anon_fingerprint: bool = setting(
        "KDC_ANON_FINGERPRINT", False, _bool, "KDCube's fingerprint: anonymous requests with no session id, cookie or "
        "live stream share the session of their client address + User-Agent (off: see README)")
    anon_upgrade_by_id: bool = setting(
        "KDC_ANON_UPGRADE_BY_ID", False, _bool,
        "A token with an anonymous session's `user_session_id` takes it over without its session cookie (KDCube's "
        "rule; off: only the browser holding the cookie upgrades it, others get 403)")
    session_cookie_secure: bool = setting(
        "KDC_SESSION_COOKIE_SECURE", False, _bool, "Mark the session cookie `Secure` (set it behind HTTPS)")
    session_cookie_samesite: str = setting(
        "KDC_SESSION_COOKIE_SAMESITE", "Lax", doc="The session cookie's `SameSite`: `Lax`, `Strict` or `None` "
        "(`None` needs `KDC_SESSION_COOKIE_SECURE=1`)")
    session_log_size: int = setting(
        "KDC_SESSION_LOG_SIZE", 1000, int, "Events kept per session for replay after a reconnect")
    session_log_ttl_s: int = setting("KDC_SESSION_LOG_TTL_S", 3600, int, "How long a session's replay log is kept")
    session_log_bytes: int = setting(
        "KDC_SESSION_LOG_BYTES", 4 << 20, int,
        "Bytes one session's replay log may hold (its share); past it its oldest events go first")
    session_log_budget_bytes: int = setting(
        "KDC_SESSION_LOG_BUDGET_BYTES", 256 << 20, int,
        "Bytes all replay logs may hold (per process in memory, per Redis); past it the largest logs shrink first")
    session_log_max_sessions: int = setting(
        "KDC_SESSION_LOG_MAX_SESSIONS", 10_000, int,
        "Sessions with a replay log in memory (least recently written dropped first; memory bus only)")

    # --- chat turns -----------------------------------------------------------------------
    max_upload_mb: float = setting("CHAT_MAX_UPLOAD_MB", 20.0, float, "Largest single attachment, MiB")
    max_files: int = setting("KDC_MAX_FILES_PER_MESSAGE", 10, int, "Attachments per message")
    message_max_bytes: int = setting(
        "MESSAGE_MAX_BYTES", 25 * MiB, int, "Whole message: text, metadata and all attachments")
    max_message_chars: int = setting("CHAT_MAX_MESSAGE_CHARS", 32000, int, "Characters of message text")
    max_external_events: int = setting(
        "KDC_MAX_EXTERNAL_EVENTS", 64, int, "Events in one KDCube `external_events` submission; more → 413")
    conv_busy_policy: str = setting(
        "KDC_CONV_BUSY_POLICY", "continue", doc="A message for a conversation whose turn runs: `continue` "
        "(KDCube: a continuation the turn may take, else the next turn), `reject` (409) or `queue` (run beside it)")
    max_continuations: int = setting(
        "KDC_MAX_CONTINUATIONS", 16, int, "Continuations waiting per conversation; past it a message gets 429")
    continuation_poll_ms: int = setting(
        "KDC_CONTINUATION_POLL_MS", 100, int,
        "Through Redis: how often a bundle waiting in `turn.next_continuation()` looks for one")
    turn_queue_size: int = setting(
        "KDC_TURN_QUEUE_SIZE", 1000, int, "Turns waiting for a worker; past it a post gets 503")
    worker_concurrency: int = setting("KDC_WORKER_CONCURRENCY", 8, int, "Turns one process runs at once")
    publish_window: int = setting(
        "KDC_PUBLISH_WINDOW", 1024, int,
        "Through Redis: events a running turn may have sent and not yet seen confirmed (pipelined "
        "publishing; past it an emit waits). 1: each emit waits for Redis")
    turn_timeout_s: float = setting("KDC_TURN_TIMEOUT_S", 600.0, float, "A bundle's turn is cancelled after this")
    turn_max_attempts: int = setting(
        "KDC_TURN_MAX_ATTEMPTS", 3, int, "Runs of one turn whose worker died before it is failed with chat_error")
    turn_lease_ms: int = setting(
        "KDC_TURN_LEASE_MS", 15000, int, "A running turn not renewed this long (its worker died) is taken over")
    turn_retry_s: float = setting(
        "KDC_TURN_RETRY_S", 60.0, float,
        "A worker whose turn cannot reach Redis retries it (re-run, chat_error, conv_status, ack) this long, "
        "then hands it back to the queue")
    turn_dead_letter_size: int = setting(
        "KDC_TURN_DEAD_LETTER_SIZE", 1000, int,
        "Undecodable queue entries kept (with their reason) in the `<prefix>:turns:dead` stream")
    bundle: str = setting(
        "KDC_BUNDLE", "kdc_trio.bundles.demo:DemoBundle",
        doc="The bundle to run: `module:Class`, or `path/to/file.py:Class` (a file loaded at start)")
    event_filter: str | None = setting(
        "KDC_EVENT_FILTER", None, _opt_str, "`module:callable` deciding per event what a user may receive")
    filter_fail_open: bool = setting(
        "KDC_FILTER_FAIL_OPEN", False, _bool, "Deliver an event when the filter raises (default: suppress)")

    # --- protections (KDCube's gateway: rate limits per user type, admission under load) ---
    rate_limits: bool = setting(
        "KDC_RATE_LIMITS", True, _bool,
        "Rate limits on turns and new connections per session and per client address (0 = off, for load tests)")
    rate_anonymous_hourly: int = setting(
        "KDC_RATE_LIMIT_ANONYMOUS_HOURLY", 50, int, "Turns an anonymous session may start per clock hour (0 = no limit)")
    rate_anonymous_burst: int = setting(
        "KDC_RATE_LIMIT_ANONYMOUS_BURST", 5, int, "Turns an anonymous session may start per burst window (0 = no limit)")
    rate_registered_hourly: int = setting(
        "KDC_RATE_LIMIT_REGISTERED_HOURLY", 500, int, "Turns a registered session may start per clock hour (0 = no limit)")
    rate_registered_burst: int = setting(
        "KDC_RATE_LIMIT_REGISTERED_BURST", 20, int, "Turns a registered session may start per burst window (0 = no limit)")
    rate_privileged_hourly: int = setting(
        "KDC_RATE_LIMIT_PRIVILEGED_HOURLY", 0, int, "Turns a privileged session may start per clock hour (0 = no limit)")
    rate_privileged_burst: int = setting(
        "KDC_RATE_LIMIT_PRIVILEGED_BURST", 100, int, "Turns a privileged session may start per burst window (0 = no limit)")
    rate_burst_window_s: float = setting(
        "KDC_RATE_LIMIT_BURST_WINDOW_S", 60.0, float, "The burst limits' sliding window")
    rate_address_factor: float = setting(
        "KDC_RATE_LIMIT_ADDRESS_FACTOR", 4.0, float,
        "A client address's budget per user type, as a multiple of one session's (sessions behind one address "
        "share it; 0 = no per-address limit)")
    rate_connect_factor: float = setting(
        "KDC_RATE_LIMIT_CONNECT_FACTOR", 2.0, float,
        "New connections (SSE streams, Socket.IO connects) allowed, as a multiple of the turn limits (0 = not limited)")
    admission: bool = setting(
        "KDC_ADMISSION", True, _bool,
        "Admission under load: past a pressure threshold new turns and connections get 503 + Retry-After, "
        "anonymous first (0 = off)")
    admission_anonymous: float = setting(
        "KDC_ADMISSION_ANONYMOUS_THRESHOLD", 0.6, float, "Pressure (0..1) past which anonymous traffic is shed")
    admission_registered: float = setting(
        "KDC_ADMISSION_REGISTERED_THRESHOLD", 0.8, float, "Pressure (0..1) past which registered traffic is shed")
    admission_hard: float = setting(
        "KDC_ADMISSION_HARD_THRESHOLD", 0.95, float, "Pressure (0..1) past which everyone, privileged too, is shed")
    admission_interval_ms: int = setting(
        "KDC_ADMISSION_INTERVAL_MS", 250, int,
        "How often pressure is sampled: the event loop's lag (one sleep) and the turn queue's depth")
    loop_lag_max_ms: int = setting(
        "KDC_LOOP_LAG_MAX_MS", 1000, int, "Event-loop lag counted as full pressure (1.0); lag/this is the lag's share")

    # --- Redis and the relay --------------------------------------------------------------
    redis_url: str | None = setting("REDIS_URL", None, _opt_str, "Unset = embedded (memory bus, memory sessions); redis://, rediss://, unix:// or redis+cluster://host:port,…")
    redis_backend: str = setting(
        "KDC_REDIS_BACKEND", "native", doc="`native` (trio RESP client) or `compat` (redis-py under trio-asyncio)")
    relay_identity: str | None = setting(
        "CB_RELAY_IDENTITY", None, _opt_str, "Channel prefix; default kdcube.relay.<CB_ORCHESTRATOR_TYPE>")
    orchestrator_type: str = setting("CB_ORCHESTRATOR_TYPE", "chatbot", doc="Used in the default relay identity")
    relay_linger_ms: int = setting(
        "KDC_RELAY_LINGER_MS", 2000, int, "Keep a session subscribed this long after its last connection left")
    redis_inline_attachment_bytes: int = setting(
        "KDC_REDIS_INLINE_ATTACHMENT_BYTES", 256 * 1024, int,
        "Attachments up to this size travel inside the queued turn; larger ones via a Redis key with a TTL")
    redis_attachment_ttl_s: int = setting(
        "KDC_REDIS_ATTACHMENT_TTL_S", 3600, int, "Lifetime of an attachment stored beside its queued turn")
    redis_retry_max_ms: int = setting(
        "KDC_REDIS_RETRY_MAX_MS", 5000, int,
        "Longest pause between retries of a Redis loop that failed (queue reads, leases, pub/sub reconnect)")
    pubsub_ping_interval_s: float = setting(
        "KDC_PUBSUB_PING_INTERVAL_S", 5.0, float, "The pub/sub connection sends a PING this often to prove it is alive")
    pubsub_ping_timeout_s: float = setting(
        "KDC_PUBSUB_PING_TIMEOUT_S", 3.0, float,
        "No PONG within this: the pub/sub connection is dropped, re-made, and the gap filled from the session log")
    redis_prefix: str = setting("KDC_REDIS_PREFIX", "kdc", _key_prefix,
                                "Prefix of kdc-trio's own Redis keys (sessions, turns, logs); no `{` `}`")

    # --- Socket.IO ------------------------------------------------------------------------
    sio_ping_interval_ms: int = setting("KDC_SIO_PING_INTERVAL_MS", 25000, int, "Engine.IO pingInterval")
    sio_ping_timeout_ms: int = setting("KDC_SIO_PING_TIMEOUT_MS", 20000, int, "Engine.IO pingTimeout")
    sio_connect_timeout_ms: int = setting(
        "KDC_SIO_CONNECT_TIMEOUT_MS", 45000, int, "Time a client has to send the Socket.IO CONNECT")
    sio_recovery: str = setting(
        "KDC_SIO_RECOVERY", "auto", _recovery_mode,
        "Socket.IO connection-state recovery (`pid` + offsets): `on`, `off`, or `auto` (on unless the "
        "handshake's User-Agent is a Python client; auth `recovery: true/false` decides per socket)")
    sio_upgrade_timeout_ms: int = setting(
        "KDC_SIO_UPGRADE_TIMEOUT_MS", 10000, int, "Time a client has to finish the polling→WebSocket upgrade")
    sio_max_payload: int = setting(
        "KDC_SIO_MAX_PAYLOAD", 0, int,
        "Engine.IO maxPayload; 0 = derived from the largest allowed message (attachments + JSON)")
    eio_max_packets: int = setting(
        "KDC_EIO_MAX_PACKETS", 1000, int,
        "Packets in one Engine.IO polling POST; more → 400 with the Engine.IO error body and the session closed")
    eio_max_sessions: int = setting(
        "KDC_EIO_MAX_SESSIONS", 10000, int,
        "Engine.IO sessions per process; past it a handshake gets 503 + Retry-After (0 = no cap)")
    eio_max_sessions_per_address: int = setting(
        "KDC_EIO_MAX_SESSIONS_PER_ADDRESS", 5000, int,
        "Engine.IO sessions per client address (the TCP peer: behind a proxy all clients share one); "
        "past it a handshake gets 429 + Retry-After (0 = no cap)")
    eio_handshake_timeout_s: float = setting(
        "KDC_EIO_HANDSHAKE_TIMEOUT_S", 10.0, float,
        "A polling session that is never polled, posted to or upgraded is closed after this")

    # --- logging --------------------------------------------------------------------------
    log_format: str = setting("KDC_LOG_FORMAT", "text", doc="`text` or `json` (one object a line)")
    log_level: str = setting("KDC_LOG_LEVEL", "INFO", doc="Python logging level")

    # --- derived --------------------------------------------------------------------------
    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MiB)

    @property
    def effective_max_body_bytes(self) -> int:
        return self.max_body_bytes or self.message_max_bytes + MiB

    @property
    def effective_sio_max_payload(self) -> int:
        if self.sio_max_payload:
            return self.sio_max_payload
        # All attachments at the per-file limit (bounded by the message limit), base64-sized for
        # polling, plus room for the JSON. Never the 1 MB default that breaks uploads.
        raw = min(self.max_files * self.max_upload_bytes, self.message_max_bytes)
        return raw * 4 // 3 + self.max_files * 8 + MiB

    @property
    def relay_prefix(self) -> str:
        return self.relay_identity or f"kdcube.relay.{self.orchestrator_type}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            if name and name in env:
                parse = f.metadata.get("parse") or str
                try:
                    kwargs[f.name] = parse(env[name])
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def documented(cls) -> list[tuple[str, Any, str]]:
        """(ENV_NAME, default, doc) for every setting: the README table is generated from this."""
        return [(f.metadata["env"], f.default, f.metadata["doc"]) for f in fields(cls) if "env" in f.metadata]
