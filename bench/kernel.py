"""What the kernel holds for a server's open connections, beside the process's RSS: each TCP
socket's buffers (`ss -tm` skmem of the server's side) and the fixed objects every socket costs
(the slab objects of its `struct tcp_sock`, socket inode, file, dentry and epoll item)."""

from __future__ import annotations

import re
import subprocess

SOCKET_SLABS = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi")
_SKMEM = re.compile(rb"skmem:\(r(\d+),rb\d+,t(\d+),tb\d+,f(\d+),w(\d+),o(\d+),bl(\d+)")


def socket_buffers(port: int) -> tuple[int, int]:
    """(established sockets, bytes charged to their buffers: rmem + wmem + forward alloc +
    queued + options + backlog) of the server side of `port`; (0, 0) without `ss`."""
    try:
        out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0, 0
    count = total = 0
    for m in _SKMEM.finditer(out):
        count += 1
        r, t, f, w, o, bl = map(int, m.groups())
        total += r + f + w + o + bl  # t (wmem_alloc) is counted within w (queued)
    return count, total


def socket_struct_bytes() -> int | None:
    """Bytes of slab objects one open TCP socket holds (object sizes from /proc/slabinfo, which
    needs root); None when unreadable."""
    try:
        lines = open("/proc/slabinfo").read().splitlines()
    except OSError:
        return None
    sizes = {}
    for line in lines[2:]:
        f = line.split()
        if f and f[0] in SOCKET_SLABS:
            sizes[f[0]] = int(f[3])
    return sum(sizes.values()) if len(sizes) == len(SOCKET_SLABS) else None


def tcp_mem_pages() -> int:
    """/proc/net/sockstat `TCP: … mem N`: pages of TCP buffers of the whole machine (noisy when
    anything else runs; kept beside the per-port count as a cross-check)."""
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("mem") + 1])
    return 0
