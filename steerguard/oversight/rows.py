"""A record as one flat row: the records table, the live view and the CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from steerguard.audit.records import DecisionRecord, InterventionRecord

Record = DecisionRecord | InterventionRecord

CSV_FIELDS = ["ts", "time", "kind", "record_id", "decision_id", "request_id", "session_id",
              "user_ref", "outcome", "error_type", "rules", "vector", "strength", "layers",
              "op", "positions_affected", "mean_delta_norm", "failed_closed", "chain", "seq"]


def record_row(rec: Record) -> dict[str, Any]:
    iv = rec if isinstance(rec, InterventionRecord) else None
    dec = rec if isinstance(rec, DecisionRecord) else None
    return {
        "ts": rec.ts,
        "time": rec.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "kind": rec.kind, "record_id": rec.record_id, "decision_id": rec.decision_id,
        "request_id": rec.request_id or "", "session_id": rec.session_id or "",
        "user_ref": rec.user_ref or "", "outcome": rec.outcome.status,
        "error_type": rec.outcome.error_type or "",
        "rules": (iv.rule_id or "") if iv else " ".join(r.rule_id for r in rec.rules),
        "vector": iv.vector if iv else "",
        "strength": iv.strength if iv else "",
        "layers": " ".join(map(str, iv.layers)) if iv else "",
        "op": iv.op if iv else "",
        "positions_affected": iv.positions_affected if iv else "",
        "mean_delta_norm": round(iv.mean_delta_norm, 4) if iv else "",
        "failed_closed": dec.failed_closed if dec else "",
        "chain": rec.chain, "seq": rec.seq,
    }


def table_row(rec: Record) -> dict[str, Any]:
    """record_row with the links of the records table (quoted here: the template only
    escapes)."""
    row = record_row(rec)
    row["href_decision"] = "/dashboard/decisions/" + quote(rec.decision_id, safe="")
    row["href_session"] = ("/dashboard/session?id=" + quote(rec.session_id, safe="")
                           if rec.session_id else "")
    row["href_user"] = ("/dashboard/user?ref=" + quote(rec.user_ref, safe="")
                        if rec.user_ref else "")
    row["what"] = (f"{row['vector']} {row['rules']}".strip() if row["kind"] == "intervention"
                   else row["rules"])
    return row


def csv_lines(records: Iterable[Record]) -> Iterator[bytes]:
    """CSV, header first, a few hundred rows per chunk for a streamed body."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for n, rec in enumerate(records, start=1):
        row = record_row(rec)
        # a spreadsheet runs a cell that starts with these as a formula
        writer.writerow({k: "'" + v if isinstance(v, str) and v and v[0] in "=+-@\t\r" else v
                         for k, v in row.items()})
        if n % 500 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()
