"""Walk every chain and report the first modified, deleted, inserted or reordered record;
compare with checkpoints (chain heads, streams' entries-added) to catch truncation."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import redis
from pydantic import BaseModel

from steerguard.audit.chain import GENESIS, record_hash
from steerguard.audit.connection import Client
from steerguard.audit.keys import KeySpace

ProblemKind = Literal["modified", "deleted", "inserted", "reordered", "truncated", "unreadable"]


@dataclass(slots=True)
class Entry:
    pos: int
    day: str  # "" for a line of an export file
    stream_id: str  # or "<file>:<line>"
    chain: str
    seq: int  # -1: not an audit record (`unreadable` says why)
    prev: str
    hash: str
    hash_ok: bool
    unreadable: str = ""

    @property
    def where(self) -> str:
        return f"{self.day}/{self.stream_id}" if self.day else self.stream_id


class Problem(BaseModel):
    kind: ProblemKind
    chain: str | None = None
    seq: int | None = None
    where: str | None = None  # "day/stream-id" of the record, when there is one
    detail: str
    pos: int = 0  # position in the walk, for "first"


class VerifyReport(BaseModel):
    ok: bool
    records: int
    chains: int
    problems: list[Problem]
    checkpoint: str | None = None

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def read_day(client: Client, keys: KeySpace, day: str, chunk: int = 2000,
             after: str | None = None) -> Iterator[Entry]:
    """The day's entries in stream order (those after stream id `after`, when given)."""
    stream = keys.stream(day)
    start = f"({after}" if after else "-"
    pos = 0
    while True:
        batch = client.xrange(stream, start, "+", count=chunk)
        for sid, fields in batch:
            yield _entry(pos, day, sid.decode(), fields.get(b"r", b""),
                         fields.get(b"h", b"").decode(errors="replace"))
            pos += 1
        if len(batch) < chunk:
            return
        start = "(" + batch[-1][0].decode()


class _Head(BaseModel):
    seq: int
    hash: str


class _Counters(BaseModel):
    entries_added: int
    length: int


class _Checkpoint(BaseModel):
    chains: dict[str, _Head] = {}
    streams: dict[str, _Counters] = {}


def read_checkpoints(path: Path | None, problems: list[Problem] | None = None
                     ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Highest head per chain over all checkpoint lines, and the latest stream counters.
    A line that is not a checkpoint is a problem (appended to `problems`), never a crash:
    the file may have been damaged as much as the log it vouches for."""
    chains: dict[str, dict] = {}
    streams: dict[str, dict] = {}
    if path is None or not path.exists():
        return chains, streams
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                cp = _Checkpoint.model_validate_json(line)
            except ValueError as e:  # pydantic's ValidationError, for bad JSON too
                if problems is not None:
                    problems.append(Problem(kind="unreadable", where=f"{path}:{lineno}",
                                            detail="checkpoint line is not a checkpoint: "
                                            + _first_error(e)))
                continue
            for c, head in cp.chains.items():
                if head.seq > chains.get(c, {"seq": -1})["seq"]:
                    chains[c] = head.model_dump()
            streams.update({d: c.model_dump() for d, c in cp.streams.items()})
    return chains, streams


def _first_error(e: ValueError) -> str:
    errors = e.errors() if hasattr(e, "errors") else []
    if errors:
        err = errors[0]
        where = ".".join(str(x) for x in err["loc"])
        return f"{where}: {err['msg']}" if where else err["msg"]
    return str(e).splitlines()[0]


def verify(client: Client, keys: KeySpace, checkpoint_path: Path | None = None
           ) -> VerifyReport:
    anchors = {k.decode(): json.loads(v) for k, v in client.hgetall(keys.anchors).items()}
    trimmed_days = {d.decode() for d in client.smembers(keys.anchors + ":days")}
    days = [d.decode() for d in client.zrange(keys.days, 0, -1)]
    problems: list[Problem] = []
    by_chain, n = sort_chains((e for day in days for e in read_day(client, keys, day)),
                              problems, "entry")
    for chain, entries in by_chain.items():
        problems.extend(_walk(chain, entries, anchors.get(chain)))

    ck_chains, ck_streams = read_checkpoints(checkpoint_path, problems)
    for chain, head in ck_chains.items():
        anchor = anchors.get(chain)
        if anchor and head["seq"] <= anchor["seq"]:
            continue  # that part of the chain was removed by retention
        entries = by_chain.get(chain, [])
        at = next((e for e in entries if e.seq == head["seq"]), None)
        last = max((e.seq for e in entries), default=-1)
        if at is None and last < head["seq"]:
            problems.append(Problem(
                kind="truncated", chain=chain, seq=last + 1, pos=n,
                detail=f"checkpoint has chain {chain} up to seq {head['seq']}; "
                       f"the log ends at seq {last}"))
        elif at is not None and at.hash != head["hash"]:
            problems.append(Problem(
                kind="modified", chain=chain, seq=head["seq"], where=at.where,
                detail="record differs from the checkpointed head hash", pos=at.pos))
    for day, counters in ck_streams.items():
        if day in trimmed_days:
            continue
        problems.extend(_stream_check(client, keys, day, counters, n))
    problems.sort(key=lambda p: p.pos)
    return VerifyReport(ok=not problems, records=n, chains=len(by_chain), problems=problems,
                        checkpoint=str(checkpoint_path) if checkpoint_path else None)


def verify_export(path: Path, checkpoint_path: Path | None = None) -> VerifyReport:
    """An export (`audit export --format jsonl`: stored records, one per line) verified on its
    own, away from Redis. A line's SHA-256 is its record's hash, so each chain is walked from
    its first record in the file: a changed, deleted, inserted or reordered record after it is
    found as in Redis. What the file cannot show by itself: records cut off before a chain's
    first line or after its last, and a change to a chain's last record; the checkpoints'
    heads cover the records they name (compared when `checkpoint_path` is given)."""
    problems: list[Problem] = []
    with open(path, "rb") as f:
        lines = ((lineno, line.rstrip(b"\n")) for lineno, line in enumerate(f, start=1))
        by_chain, n = sort_chains(
            (_entry(0, "", f"{path.name}:{lineno}", line, None)
             for lineno, line in lines if line.strip()), problems, "line")
    for chain, entries in by_chain.items():
        start = entries[0]  # the export may begin in the middle of a chain
        problems.extend(_walk(chain, entries, {"seq": start.seq - 1, "hash": start.prev}))
    ck_chains, _ = read_checkpoints(checkpoint_path, problems)
    for chain, head in ck_chains.items():
        at = next((e for e in by_chain.get(chain, []) if e.seq == head["seq"]), None)
        if at is not None and at.hash != head["hash"]:
            problems.append(Problem(
                kind="modified", chain=chain, seq=head["seq"], where=at.where,
                detail="record differs from the checkpointed head hash", pos=at.pos))
    problems.sort(key=lambda p: p.pos)
    return VerifyReport(ok=not problems, records=n, chains=len(by_chain), problems=problems,
                        checkpoint=str(checkpoint_path) if checkpoint_path else None)


def sort_chains(entries: Iterable[Entry], problems: list[Problem], what: str
                ) -> tuple[dict[str, list[Entry]], int]:
    """The entries of each chain in the order read, numbered (`pos`) in that order, and how
    many were read; one that is not an audit record is a problem."""
    by_chain: dict[str, list[Entry]] = defaultdict(list)
    n = 0
    for e in entries:
        e.pos = n
        n += 1
        if e.seq < 0:
            problems.append(Problem(kind="unreadable", where=e.where,
                                    detail=f"{what} is not an audit record: {e.unreadable}",
                                    pos=e.pos))
        else:
            by_chain[e.chain].append(e)
    return by_chain, n


def _entry(pos: int, day: str, where: str, payload: bytes, stored_hash: str | None) -> Entry:
    """The chain fields of one stored record (seq -1 when it is not one); with no stored
    hash (an export's line), its own hash is the record's."""
    digest = record_hash(payload)
    entry = Entry(pos, day, where, "", -1, "", stored_hash or digest,
                  stored_hash is None or digest == stored_hash)
    try:
        body = json.loads(payload)
    except RecursionError:
        entry.unreadable = "JSON nested too deeply"
        return entry
    except ValueError as e:  # bad JSON, bad UTF-8
        entry.unreadable = f"not JSON ({e})" if payload.strip() else "an empty record"
        return entry
    if not isinstance(body, dict):
        entry.unreadable = f"a JSON {type(body).__name__}, not an object"
        return entry
    chain, seq, prev = body.get("chain"), body.get("seq"), body.get("prev")
    if not isinstance(chain, str) or not isinstance(prev, str):
        entry.unreadable = "chain and prev must be strings"
    elif not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        entry.unreadable = f"seq must be an integer >= 0, not {str(seq)[:40]!r}"
    else:
        entry.chain, entry.seq, entry.prev = chain, seq, prev
    return entry


def _walk(chain: str, entries: list[Entry], anchor: dict | None) -> list[Problem]:
    problems: list[Problem] = []
    expect, prev = (anchor["seq"] + 1, anchor["hash"]) if anchor else (0, GENESIS)
    present = {e.seq for e in entries}
    done: set[int] = set()
    before: Entry | None = None  # the record `prev` belongs to

    def report(kind: ProblemKind, e: Entry, seq: int, detail: str) -> None:
        problems.append(Problem(kind=kind, chain=chain, seq=seq, where=e.where,
                                detail=detail, pos=e.pos))

    for e in entries:
        if not e.hash_ok:
            report("modified", e, e.seq, f"record seq {e.seq} does not match its hash")
            return problems
        if e.seq in done or (anchor and e.seq <= anchor["seq"]):
            report("inserted", e, e.seq, f"a second record claims seq {e.seq}")
            return problems
        if e.seq > expect:
            if expect in present:
                report("reordered", e, expect,
                       f"seq {e.seq} stored before seq {expect}")
            else:
                report("deleted", e, expect,
                       f"seq {expect}..{e.seq - 1} missing before this record")
            return problems
        if e.prev != prev:
            # name where the changed record is (the first of a file has nothing before it)
            report("modified", before or e, e.seq - 1,
                   f"seq {e.seq - 1} was changed: seq {e.seq} at {e.where} links to another "
                   "hash")
            return problems
        done.add(e.seq)
        expect, prev, before = e.seq + 1, e.hash, e
    return problems


def stream_counters(client: Client, keys: KeySpace, day: str) -> dict[str, int]:
    info = client.xinfo_stream(keys.stream(day))
    return {"entries_added": int(info["entries-added"]), "length": int(info["length"])}


def _stream_check(client: Client, keys: KeySpace, day: str, ck: dict, pos: int
                  ) -> list[Problem]:
    try:
        now = stream_counters(client, keys, day)
    except redis.ResponseError:
        now = {"entries_added": 0, "length": 0}
    removed_then = ck["entries_added"] - ck["length"]
    removed_now = now["entries_added"] - now["length"]
    if now["entries_added"] < ck["entries_added"]:
        detail = (f"stream of {day} was recreated: entries-added {now['entries_added']} < "
                  f"checkpointed {ck['entries_added']}")
    elif removed_now > removed_then:
        detail = (f"{removed_now - removed_then} entries removed from the stream of {day} "
                  "since the checkpoint (XDEL/XTRIM/XADD MAXLEN)")
    else:
        return []
    return [Problem(kind="truncated", where=day, detail=detail, pos=pos)]


def write_checkpoint(client: Client, keys: KeySpace, path: Path,
                     report: VerifyReport | None = None) -> dict:
    """Append the current heads and stream counters; take it only after a clean verify."""
    heads: dict[str, dict] = {}
    streams: dict[str, dict] = {}
    for day in [d.decode() for d in client.zrange(keys.days, 0, -1)]:
        for e in read_day(client, keys, day):
            if e.seq > heads.get(e.chain, {"seq": -1})["seq"]:
                heads[e.chain] = {"seq": e.seq, "hash": e.hash}
        streams[day] = stream_counters(client, keys, day)
    line = {"at": int(time.time() * 1000), "source": "verify", "chains": heads,
            "streams": streams, "verified": report.ok if report else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
    return line
