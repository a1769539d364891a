"""Redis ACL rules for the audit users. The writer gets only what the batch script runs, and
the user index (`<prefix>:*:u:*`) only with write permission (%W~): it can index a user but
never read who did what. The reader gets read commands only. The admin trims by retention."""

from __future__ import annotations

import hashlib

# A cluster client (cluster: true) reads the slot map (CLUSTER SLOTS) when it connects and
# after a failover, and the command table (COMMAND) to find key positions; without them
# redis-py cannot connect ("Cluster mode is not enabled on this node"). Both only describe
# the server, and a single server answers CLUSTER SLOTS with an error.
_CONNECT = ["+ping", "+hello", "+client|setinfo", "+cluster|slots", "+command"]


def acl_rules(prefix: str = "sg") -> dict[str, list[str]]:
    """ACL SETUSER rule words per user (no password words)."""
    return {
        "writer": [
            "resetkeys", "resetchannels", "-@all", *_CONNECT,
            "+evalsha", "+script|load",  # the batch script, and loading it after a restart
            "+xadd", "+zadd", "+hincrby", "+hget", "+hset", "+hsetnx", "+hexists",  # the script
            f"%W~{prefix}:*",  # write-only on everything of the log: streams, indexes, days
            # the script reads the head and a decision's ids (HGET); HINCRBY also reads
            f"~{prefix}:*:head", f"~{prefix}:*:dec", f"~{prefix}:*:agg:*",
        ],
        "reader": ["resetkeys", "resetchannels", "-@all", *_CONNECT, "+@read",
                   f"%R~{prefix}:*"],
        "auditadmin": [
            "resetkeys", "resetchannels", "-@all", *_CONNECT, "+@read",
            "+hset", "+sadd", "+unlink", "+zrem",  # trim(): anchors, then whole days
            f"~{prefix}:*",
        ],
    }


def acl_file(prefix: str, passwords: dict[str, str]) -> str:
    """An ACL file (aclfile) with SHA-256 password hashes; the default user is disabled."""
    lines = ["user default off resetkeys -@all"]
    for user, rules in acl_rules(prefix).items():
        digest = hashlib.sha256(passwords[user].encode()).hexdigest()
        lines.append(" ".join(["user", user, "on", f"#{digest}", *rules]))
    lines.append("user healthcheck on nopass resetkeys resetchannels -@all +ping")
    return "\n".join(lines) + "\n"
