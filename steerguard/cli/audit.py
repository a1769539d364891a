"""`steerguard audit ...`: tail, query, stats, verify, watch, export, trim. Thin shell over
AuditStore."""

from __future__ import annotations

import csv
import functools
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, ParamSpec, TypeVar

import redis
import typer
from redis.exceptions import RedisClusterException
from rich.console import Console
from rich.table import Table

from steerguard.audit import AuditConfig, AuditStore
from steerguard.audit.errors import AuditError
from steerguard.audit.records import DecisionRecord, InterventionRecord
from steerguard.audit.verify import Problem, verify_export
from steerguard.audit.watch import LogWatcher, WatchPass
from steerguard.cli.common import err_console
from steerguard.errors import SteerguardError

app = typer.Typer(help="Inspect, verify and export the audit log.", no_args_is_help=True)
console = Console()
P = ParamSpec("P")
R = TypeVar("R")

def _errors(func: Callable[P, R]) -> Callable[P, R]:
    """One red line instead of a traceback: configuration mistakes, files that cannot be
    read or written, and Redis refusing or unreachable (wrong URL, credentials, ACL).
    redis-py raises RedisClusterException, not a RedisError, when no node of a cluster
    answers."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SteerguardError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        except (redis.RedisError, RedisClusterException) as exc:
            err_console.print(f"[bold red]error:[/] Redis: {type(exc).__name__}: {exc}",
                              soft_wrap=True)
        except OSError as exc:  # a file to read or write (--file, --output, --checkpoint)
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2)

    return wrapper


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML with an audit: section")]
CSV_FIELDS = ["ts", "kind", "record_id", "decision_id", "request_id", "session_id", "user_ref",
              "outcome", "error_type", "rules", "vector", "strength", "layers",
              "positions_affected", "mean_delta_norm", "chain", "seq"]


def _store(config: Path | None, *, read_only: bool = True) -> AuditStore:
    try:
        return AuditStore.from_config(AuditConfig.load(config), read_only=read_only)
    except AuditError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO time (2025-06-01T12:00)") from exc


def _row(rec: DecisionRecord | InterventionRecord) -> dict[str, object]:
    is_iv = isinstance(rec, InterventionRecord)
    return {
        "ts": rec.time.isoformat(timespec="milliseconds"), "kind": rec.kind,
        "record_id": rec.record_id, "decision_id": rec.decision_id,
        "request_id": rec.request_id, "session_id": rec.session_id, "user_ref": rec.user_ref,
        "outcome": rec.outcome.status, "error_type": rec.outcome.error_type,
        "rules": (rec.rule_id or "") if is_iv else " ".join(r.rule_id for r in rec.rules),
        "vector": rec.vector if is_iv else "", "strength": rec.strength if is_iv else "",
        "layers": " ".join(map(str, rec.layers)) if is_iv else "",
        "positions_affected": rec.positions_affected if is_iv else "",
        "mean_delta_norm": round(rec.mean_delta_norm, 4) if is_iv else "",
        "chain": rec.chain, "seq": rec.seq,
    }


def _table(records: list[DecisionRecord | InterventionRecord], title: str) -> Table:
    table = Table(title=title)
    for col in ("time", "kind", "decision", "user", "outcome", "rules / vector", "strength",
                "Δnorm"):
        table.add_column(col)
    for rec in records:
        r = _row(rec)
        what = f"{r['vector']} ({r['rules']})" if rec.kind == "intervention" else r["rules"]
        table.add_row(str(r["ts"]), rec.kind, rec.decision_id[:12], (rec.user_ref or "")[:12],
                      str(r["outcome"]), str(what), str(r["strength"]),
                      str(r["mean_delta_norm"]))
    return table


@app.command()
@_errors
def tail(n: Annotated[int, typer.Option("-n")] = 20,
         follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
         json_out: Annotated[bool, typer.Option("--json")] = False,
         config: ConfigOpt = None) -> None:
    """The last records written; --follow keeps printing new ones."""
    store = _store(config)
    recs = [r for _, r in store.tail(n)]
    if json_out:
        for r in recs:
            print(r.model_dump_json())
    else:
        console.print(_table(recs, "audit log (latest)"))
    if follow:
        try:
            for _, rec in store.follow():
                if json_out:
                    print(rec.model_dump_json(), flush=True)
                else:
                    console.print(_table([rec], ""), end="")
        except KeyboardInterrupt:
            pass


@app.command()
@_errors
def query(user: str | None = None, user_ref: str | None = None, session: str | None = None,
          decision: str | None = None, rule: str | None = None, vector: str | None = None,
          outcome: str | None = None, since: str | None = None, until: str | None = None,
          limit: int = 50, cursor: str | None = None,
          json_out: Annotated[bool, typer.Option("--json")] = False,
          config: ConfigOpt = None) -> None:
    """Records matching every filter, oldest first; prints the cursor of the next page."""
    store = _store(config)
    page = store.query(user=user, user_ref=user_ref, session=session, decision=decision,
                       rule=rule, vector=vector, outcome=outcome, since=_time(since),
                       until=_time(until), limit=limit, cursor=cursor)
    if json_out:
        print(json.dumps({"records": [r.model_dump(mode="json") for r in page.records],
                          "cursor": page.cursor}))
        return
    console.print(_table(page.records, f"{len(page.records)} records"))
    if page.cursor:
        console.print(f"next page: --cursor {page.cursor}")


@app.command()
@_errors
def stats(since: str | None = None, until: str | None = None,
          bucket: Annotated[str, typer.Option(help="hour or day")] = "hour",
          json_out: Annotated[bool, typer.Option("--json")] = False,
          config: ConfigOpt = None) -> None:
    """Counts per outcome, rule and vector per time bucket."""
    if bucket not in ("hour", "day"):
        raise typer.BadParameter(f"bucket must be 'hour' or 'day', not {bucket!r}")
    b: Literal["hour", "day"] = "hour" if bucket == "hour" else "day"
    result = _store(config).stats(since=_time(since), until=_time(until), bucket=b)
    if json_out:
        print(result.model_dump_json())
        return
    table = Table(title=f"audit stats per {bucket}")
    for col in ("start", "decisions", "interventions", "outcomes", "rules", "vectors"):
        table.add_column(col)
    for row in [*result.buckets, result.total]:
        label = "total" if row is result.total else row.start.isoformat(timespec="minutes")
        table.add_row(label, str(row.decisions), str(row.interventions),
                      _counts(row.outcomes), _counts(row.rules), _counts(row.vectors))
    console.print(table)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items()))


@app.command()
@_errors
def verify(checkpoint: Annotated[Path | None, typer.Option(help="checkpoint file")] = None,
           write_checkpoint: Annotated[bool, typer.Option(
               "--write-checkpoint", help="append a checkpoint when the log verifies")] = False,
           file: Annotated[Path | None, typer.Option(
               "--file", help="verify this export (audit export --format jsonl), not Redis")
           ] = None,
           config: ConfigOpt = None) -> None:
    """Walk every chain; report the first modified, deleted, inserted or reordered record."""
    if file is not None:
        if write_checkpoint:
            raise typer.BadParameter("--write-checkpoint checkpoints Redis, not an export file")
        if not file.is_file():
            raise typer.BadParameter(f"--file {file}: no such file")
        report = verify_export(file, checkpoint)
    else:
        store = _store(config)
        report = store.verify(checkpoint)
    if report.ok:
        console.print(f"[green]ok[/green]: {report.records} records in {report.chains} chains "
                      f"(checkpoints: {report.checkpoint})")
        if write_checkpoint:
            store.checkpoint(checkpoint)
            console.print("checkpoint written")
        return
    first = report.first
    assert first is not None
    console.print(f"[red]{first.kind}[/red]: {_problem_text(first)}", highlight=False,
                  soft_wrap=True)
    for p in report.problems[1:10]:
        console.print(f"  also {p.kind}: {_problem_text(p)}", highlight=False, soft_wrap=True)
    if len(report.problems) > 10:
        console.print(f"  and {len(report.problems) - 10} more problems")
    raise typer.Exit(1)


def _problem_text(p: Problem) -> str:
    chain = f"chain {p.chain} seq {p.seq} " if p.chain is not None else ""
    return f"{chain}at {p.where}: {p.detail}" if p.where else f"{chain}{p.detail}"


def _pass_line(p: WatchPass) -> str:
    when = datetime.fromtimestamp(p.at / 1000).strftime("%Y-%m-%d %H:%M:%S")
    trimmed = f"; trimmed {', '.join(p.trimmed)}" if p.trimmed else ""
    if p.ok:
        what = "records verified (first pass: all of them)" if p.full else "new records verified"
        return (f"{when} [green]ok[/green]: {p.new_records} {what}, "
                f"{p.chains} chains, checkpoint written{trimmed}")
    first = p.problems[0]
    return (f"{when} [red]{first.kind}[/red]: {_problem_text(first)} "
            f"({len(p.problems)} problems; no checkpoint){trimmed}")


@app.command()
@_errors
def watch(interval: Annotated[float, typer.Option(help="seconds between passes")] = 60.0,
          once: Annotated[bool, typer.Option("--once", help="one pass, exit 1 on a problem")
                          ] = False,
          trim: Annotated[bool, typer.Option(
              "--trim", help="apply retention first each pass (needs auditadmin)")] = False,
          checkpoint: Annotated[Path | None, typer.Option(help="checkpoint file")] = None,
          config: ConfigOpt = None) -> None:
    """Verify records as they arrive and checkpoint heads and stream counters (the first
    pass verifies everything). Run it apart from the writer, as `reader` or `auditadmin`."""
    if interval <= 0:
        raise typer.BadParameter(f"--interval must be > 0 seconds, not {interval}")
    store = _store(config, read_only=not trim)
    watcher = LogWatcher(store.client, store.keys,
                         checkpoint or store.config.resolved_checkpoint_path)
    while True:
        result = watcher.step(store.trim if trim else None)
        console.print(_pass_line(result), soft_wrap=True)
        if once:
            raise typer.Exit(0 if result.ok else 1)
        time.sleep(interval)


@app.command()
@_errors
def export(fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
           since: str | None = None, until: str | None = None,
           output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
           config: ConfigOpt = None) -> None:
    """Every record in the time range: JSON lines exactly as stored (each line's SHA-256 is
    the record's hash: `audit verify --file` checks an export on its own), or CSV."""
    if fmt not in ("jsonl", "csv"):
        raise typer.BadParameter(f"--format must be jsonl or csv, not {fmt!r}")
    store = _store(config)
    if fmt == "jsonl":
        lines = store.export_lines(since=_time(since), until=_time(until))
        raw = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
        try:
            for line in lines:
                raw.write(line + b"\n")
            raw.flush()
        finally:
            if output:
                raw.close()
        return
    records = store.iter_records(since=_time(since), until=_time(until))
    out = open(output, "w", newline="") if output else sys.stdout  # noqa: SIM115
    try:
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for rec in records:
            writer.writerow(_row(rec))
    finally:
        if output:
            out.close()


@app.command()
@_errors
def trim(days: Annotated[int | None, typer.Option(help="retention in days")] = None,
         config: ConfigOpt = None) -> None:
    """Delete whole days older than the retention (needs the auditadmin user)."""
    removed = _store(config, read_only=False).trim(days)
    console.print(f"trimmed {len(removed)} days: {', '.join(removed) or '-'}")
