"""What a session is: who the client is, in which tenant/project, since when."""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field, replace


class UserType(str, enum.Enum):
    ANONYMOUS = "anonymous"
    REGISTERED = "registered"
    PRIVILEGED = "privileged"


@dataclass(frozen=True, kw_only=True)
class Session:
    session_id: str
    user_type: UserType
    tenant: str
    project: str
    user_id: str | None = None  # the token's subject; None while anonymous
    username: str | None = None
    roles: tuple[str, ...] = ()
    fingerprint: str | None = None  # KDCube's ip+user-agent digest, for anonymous sessions (opt-in)
    created_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["user_type"] = self.user_type.value
        d["roles"] = list(self.roles)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Session":
        return cls(
            session_id=d["session_id"],
            user_type=UserType(d["user_type"]),
            tenant=d["tenant"],
            project=d["project"],
            user_id=d.get("user_id") or None,
            username=d.get("username") or None,
            roles=tuple(d.get("roles") or ()),
            fingerprint=d.get("fingerprint") or None,
            created_at=float(d.get("created_at") or time.time()),
            last_seen=float(d.get("last_seen") or time.time()),
        )

    def seen(self, now: float | None = None) -> "Session":
        return replace(self, last_seen=time.time() if now is None else now)
