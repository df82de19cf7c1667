"""The numbers of the console's 概览 (overview) page, from the event store.

* **inflow** of a month: persons whose first ``add_contact`` falls in it;
* **outflow** of a month: persons lost in it — their latest add was followed by a
  ``delete_contact``, or they went ``churn_days`` without any event (lost on the day the quiet
  spell reached ``churn_days``, counted only once that day has passed);
* **stock** at the end of a month: persons added up to then, less those lost up to then;
* **orders / GMV** of a month: paid orders by ``paid_at``; GMV is what was paid less refunds (fen);
* **channels**: new contacts per acquisition channel (the ``channel`` property of ``add_contact``),
  how many of them bought, and their GMV.

Months are calendar months in the brand's time zone. See ``docs/metrics/pool-health.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import duckdb

ADD, DELETE = "add_contact", "delete_contact"

_PERSON_SPANS = """
    WITH adds AS (
        SELECT person_id, min(ts) AS first_add, max(ts) AS last_add FROM events_resolved
        WHERE name = $add GROUP BY person_id
    ),
    activity AS (
        SELECT person_id, max(ts) AS last_seen FROM events_resolved
        WHERE message_type <> 'change' GROUP BY person_id
    ),
    deletes AS (
        SELECT e.person_id, min(e.ts) AS deleted FROM events_resolved e JOIN adds a USING (person_id)
        WHERE e.name = $delete AND e.ts >= a.last_add AND e.ts <= $now GROUP BY e.person_id
    )
    SELECT a.person_id, a.first_add,
           least(d.deleted, CASE WHEN v.last_seen + to_days($churn_days) <= $now
                                 THEN v.last_seen + to_days($churn_days) END) AS lost
    FROM adds a JOIN activity v USING (person_id) LEFT JOIN deletes d USING (person_id)
"""


@dataclass(frozen=True)
class MonthRow:
    """One calendar month of the overview."""

    month: str  # YYYY-MM in the brand time zone
    inflow: int
    outflow: int
    net: int
    stock: int
    orders: int
    gmv_fen: int


@dataclass(frozen=True)
class ChannelRow:
    """One acquisition channel."""

    channel: str
    contacts: int
    buyers: int
    gmv_fen: int


@dataclass(frozen=True)
class Overview:
    """Everything the 概览 page shows."""

    contacts: int  # persons ever added
    stock: int  # reachable now
    orders: int
    gmv_fen: int
    buyers: int
    months: list[MonthRow]
    channels: list[ChannelRow]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def overview(
    con: duckdb.DuckDBPyConnection, *, time_zone: str, now: datetime, churn_days: int = 90, months: int = 12
) -> Overview:
    """Compute the overview over the last ``months`` calendar months up to ``now``."""
    params = {"add": ADD, "delete": DELETE, "churn_days": churn_days, "now": now, "tz": time_zone}
    spans = {k: params[k] for k in ("add", "delete", "churn_days", "now")}
    con.execute(f"CREATE OR REPLACE TEMP TABLE _ov_spans AS {_PERSON_SPANS}", spans)
    try:
        return _collect(con, params, months)
    finally:
        con.execute("DROP TABLE IF EXISTS _ov_spans")


def _collect(con: duckdb.DuckDBPyConnection, params: dict[str, Any], months: int) -> Overview:
    month_of = "strftime(timezone($tz, {col}), '%Y-%m')"
    flow = con.execute(
        f"""
        WITH inflow AS (SELECT {month_of.format(col="first_add")} AS m, count(*) AS n FROM _ov_spans GROUP BY 1),
             outflow AS (SELECT {month_of.format(col="lost")} AS m, count(*) AS n FROM _ov_spans
                         WHERE lost IS NOT NULL GROUP BY 1),
             paid AS (SELECT {month_of.format(col="paid_at")} AS m, count(*) AS n,
                             sum(amount_fen - refund_fen) AS gmv
                      FROM orders_current WHERE paid_at IS NOT NULL AND paid_at <= $now GROUP BY 1),
             calendar AS (SELECT m FROM inflow UNION SELECT m FROM outflow UNION SELECT m FROM paid)
        SELECT c.m, coalesce(i.n, 0), coalesce(o.n, 0), coalesce(p.n, 0), coalesce(p.gmv, 0)
        FROM calendar c LEFT JOIN inflow i USING (m) LEFT JOIN outflow o USING (m) LEFT JOIN paid p USING (m)
        WHERE c.m <= {month_of.format(col="$now")}
        ORDER BY c.m
        """,
        {k: params[k] for k in ("tz", "now")},
    ).fetchall()
    rows, stock = [], 0
    for month, inflow, outflow, orders, gmv in flow:
        stock += inflow - outflow
        rows.append(MonthRow(month, inflow, outflow, inflow - outflow, stock, orders, int(gmv)))
    totals = con.execute(
        """
        SELECT (SELECT count(*) FROM _ov_spans), (SELECT count(*) FROM _ov_spans WHERE lost IS NULL),
               count(*), coalesce(sum(amount_fen - refund_fen), 0), count(DISTINCT person_id)
        FROM orders_current WHERE paid_at IS NOT NULL AND paid_at <= $now
        """,
        {"now": params["now"]},
    ).fetchone()
    assert totals is not None
    channels = con.execute(
        """
        WITH first_add AS (
            SELECT person_id, arg_min(json_extract_string(properties, '$.channel'), ts) AS channel
            FROM events_resolved WHERE name = $add GROUP BY person_id
        ),
        spend AS (
            SELECT person_id, sum(amount_fen - refund_fen) AS gmv FROM orders_current
            WHERE paid_at IS NOT NULL AND paid_at <= $now GROUP BY person_id
        )
        SELECT coalesce(f.channel, '未知'), count(*), count(s.person_id), coalesce(sum(s.gmv), 0)
        FROM first_add f LEFT JOIN spend s USING (person_id)
        GROUP BY 1 ORDER BY 2 DESC, 1
        """,
        {"add": params["add"], "now": params["now"]},
    ).fetchall()
    return Overview(
        contacts=int(totals[0]),
        stock=int(totals[1]),
        orders=int(totals[2]),
        gmv_fen=int(totals[3]),
        buyers=int(totals[4]),
        months=rows[-months:],
        channels=[ChannelRow(str(c), int(n), int(b), int(g)) for c, n, b, g in channels],
    )
