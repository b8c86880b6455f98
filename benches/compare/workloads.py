"""The benchmark's work, written once for each engine.

segql gets its own language (segment conditions, `segql rfm`, `segql
refresh`); DuckDB gets the plain SQL a person would write for the same
answer. The DuckDB text follows segql's documented rules exactly, so both
sides must return the same members and scores (README.md, "The segment
language" and "Your own warehouse"):

- a purchase is an order with a customer id, a status other than
  `cancelled` (case-blind, segql's default `[purchases]` rule), placed
  before the as-of instant (00:00 UTC of the as-of day);
- order metrics come from purchases; customers without purchases have
  `orders_count` and `amount_spent` 0 and every other metric NULL;
- RFM quintiles (default scheme) rank purchasing customers with NTILE(5),
  worst first, and equal values share the score NTILE gives the first row
  of their run ("ties share a score"); recency is days since the last
  order (low is good), frequency the order count, monetary total spend;
- the group comes from the standard R x F map (udfs/src/rfm/segment_map.rs),
  `Prospects` for customers without purchases;
- set semantics: `NOT c` and `!=` keep customers for whom `c` is not true,
  NULLs included (`IS NOT TRUE`, `IS DISTINCT FROM` below);
- `bought(...)` looks at purchased order lines (`order_items` carries the
  order's customer, time and status), `date: a..b` is inclusive on both
  ends, `count: n` counts distinct orders;
- `birthday IN NEXT n DAYS` is an anniversary in [as_of, as_of + n], both
  included, with a Feb 29 birthday celebrated on Feb 28 in common years;
- `did('e', date: a..b)` is an event named `e` with a customer id, placed
  before the as-of instant, whose day is in [a, b]; windowed metrics
  (`orders_count(date: a..b)`) count the purchases whose day is in [a, b].
"""

from dataclasses import dataclass

#: Statuses that are not purchases: segql's default [purchases] rule.
EXCLUDED_STATUSES = ("cancelled",)

#: Fixed-threshold RFM scheme of Q4 (5 scores each, so the standard group
#: map applies). Each threshold is the lowest value of the next bucket up.
RFM_THRESHOLDS = {
    "recency": (30, 90, 180, 365),  # days since the last order; low is good
    "frequency": (2, 4, 8, 16),  # orders
    "monetary": (100, 300, 1000, 3000),  # total spend
}

#: Q2: bought a sofa in the last 365 days, never a coffee table.
Q2_CONDITION = (
    "bought(category: 'Sofas', date: -365d..today) AND NOT bought(category: 'Coffee tables')"
)

#: Q5: the abandoned cart: added to the cart in the last 3 days, bought
#: nothing in them.
Q5_CONDITION = "did('cart_add', date: -3d..today) AND NOT bought(date: -3d..today)"

#: Q3: recent customers (top two recency quintiles) in five big cities with
#: a birthday in the next 30 days.
Q3_CITIES = ("London", "Berlin", "Paris", "Madrid", "New York")
Q3_CONDITION = (
    "rfm_r >= 4 AND city IN ({}) AND birthday IN NEXT 30 DAYS".format(
        ", ".join(f"'{c}'" for c in Q3_CITIES)
    )
)


@dataclass(frozen=True)
class Segment:
    """A saved segment: its code, its segql condition, and the same test as
    a DuckDB predicate over the `cust` table of the refresh job (customers
    LEFT JOIN metrics and RFM scores). In the predicate `{day}` is the
    as-of day (a DATE literal); `new_members` holds the members computed so
    far in the same refresh (for in_segment) and `lines` the purchased order
    lines with their product's category."""

    code: str
    condition: str
    duck: str


#: The 22 segments refreshed by R1, R2 and R3, in dependency order (a
#: segment used by in_segment comes first).
SEGMENTS = [
    # order metrics
    Segment("frequent", "orders_count >= 5", "coalesce(orders_count, 0) >= 5"),
    Segment("big_spenders", "amount_spent >= 1000", "coalesce(amount_spent, 0) >= 1000"),
    Segment("lapsed", "days_since_last_order > 180", "days_since_last_order > 180"),
    Segment("new_customers", "first_order_date >= -90d", "first_order_date >= {day} - 90"),
    Segment("high_basket", "avg_order_value >= 250", "avg_order_value >= 250"),
    # RFM scores and groups
    Segment("champions", "rfm_group = 'Champions'", "rfm_group = 'Champions'"),
    Segment(
        "at_risk",
        "rfm_group IN ('At Risk', 'Can''t Lose')",
        "rfm_group IN ('At Risk', 'Can''t Lose')",
    ),
    Segment("lapsed_big", "rfm_m >= 4 AND rfm_r <= 2", "rfm_m >= 4 AND rfm_r <= 2"),
    Segment("prospects", "rfm_group = 'Prospects'", "rfm_group = 'Prospects'"),
    # birthday windows
    Segment(
        "birthday_week",
        "birthday IN NEXT 7 DAYS",
        "anniversary_between(birthday, {day}, {day} + 7)",
    ),
    Segment(
        "winter_birthdays",
        "birthday IN 12-01..01-31",
        # A window over New Year: Dec 1 to Jan 31 of any year (no Feb 29
        # question in it).
        "(month(birthday) = 12 OR month(birthday) = 1)",
    ),
    # bought(...)
    Segment(
        "sofa_buyers",
        "bought(category: 'Sofas', date: -365d..today)",
        "customer_id IN (SELECT customer_id FROM lines WHERE category = 'Sofas'"
        " AND day BETWEEN {day} - 365 AND {day})",
    ),
    Segment(
        "tea_not_coffee",
        "bought(category: 'Tea') AND NOT bought(category: 'Coffee')",
        "customer_id IN (SELECT customer_id FROM lines WHERE category = 'Tea')"
        " AND customer_id NOT IN (SELECT customer_id FROM lines WHERE category = 'Coffee')",
    ),
    Segment(
        "headphones_twice",
        "bought(category: 'Headphones', count: 2)",
        "customer_id IN (SELECT customer_id FROM lines WHERE category = 'Headphones'"
        " GROUP BY customer_id HAVING count(DISTINCT order_id) >= 2)",
    ),
    # customer columns
    Segment(
        "dach",
        "country IN ('Germany', 'Austria', 'Switzerland')",
        "country IN ('Germany', 'Austria', 'Switzerland')",
    ),
    Segment("londoners", "city = 'London'", "city = 'London'"),
    Segment(
        "abroad_regulars",
        "country != 'United Kingdom' AND orders_count >= 3",
        "country IS DISTINCT FROM 'United Kingdom' AND coalesce(orders_count, 0) >= 3",
    ),
    # in_segment nesting
    Segment(
        "german_champions",
        "in_segment(champions) AND country = 'Germany'",
        "customer_id IN (SELECT customer_id FROM new_members WHERE segment = 'champions')"
        " AND country = 'Germany'",
    ),
    Segment(
        "big_not_lapsed",
        "in_segment(big_spenders) AND NOT in_segment(lapsed)",
        "customer_id IN (SELECT customer_id FROM new_members WHERE segment = 'big_spenders')"
        " AND customer_id NOT IN (SELECT customer_id FROM new_members WHERE segment = 'lapsed')",
    ),
    Segment(
        "sofa_no_table",
        "in_segment(sofa_buyers) AND NOT bought(category: 'Coffee tables')",
        "customer_id IN (SELECT customer_id FROM new_members WHERE segment = 'sofa_buyers')"
        " AND customer_id NOT IN (SELECT customer_id FROM lines WHERE category = 'Coffee tables')",
    ),
    # events, and a windowed metric
    Segment(
        "abandoned_cart",
        Q5_CONDITION,
        "customer_id IN (SELECT customer_id FROM ev WHERE event = 'cart_add'"
        " AND day BETWEEN {day} - 3 AND {day})"
        " AND customer_id NOT IN (SELECT customer_id FROM lines"
        " WHERE day BETWEEN {day} - 3 AND {day})",
    ),
    Segment(
        "clicked_no_order",
        "did('email_click', date: -90d..today) AND orders_count(date: -90d..today) = 0",
        "customer_id IN (SELECT customer_id FROM ev WHERE event = 'email_click'"
        " AND day BETWEEN {day} - 90 AND {day})"
        " AND customer_id NOT IN (SELECT customer_id FROM purchases"
        " WHERE CAST(order_ts AS DATE) BETWEEN {day} - 90 AND {day})",
    ),
]

# The standard R x F map (udfs/src/rfm/segment_map.rs, STANDARD_MAP): the
# first rule that covers a customer's scores wins.
GROUP_CASE = """CASE
    WHEN rfm_r = 5 AND rfm_f BETWEEN 4 AND 5 THEN 'Champions'
    WHEN rfm_r BETWEEN 3 AND 4 AND rfm_f BETWEEN 4 AND 5 THEN 'Loyal'
    WHEN rfm_r BETWEEN 4 AND 5 AND rfm_f BETWEEN 2 AND 3 THEN 'Potential Loyalist'
    WHEN rfm_r = 5 AND rfm_f = 1 THEN 'New'
    WHEN rfm_r = 4 AND rfm_f = 1 THEN 'Promising'
    WHEN rfm_r = 3 AND rfm_f = 3 THEN 'Need Attention'
    WHEN rfm_r = 3 AND rfm_f BETWEEN 1 AND 2 THEN 'About to Sleep'
    WHEN rfm_r BETWEEN 1 AND 2 AND rfm_f = 5 THEN 'Can''t Lose'
    WHEN rfm_r BETWEEN 1 AND 2 AND rfm_f BETWEEN 3 AND 4 THEN 'At Risk'
    WHEN rfm_r = 2 AND rfm_f BETWEEN 1 AND 2 THEN 'Hibernating'
    WHEN rfm_r = 1 AND rfm_f BETWEEN 1 AND 2 THEN 'Lost'
    ELSE 'Prospects'
END"""


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def bucket_case(value: str, thresholds, low_is_good: bool) -> str:
    """`rfm_bucket(value, thresholds, 'high' | 'low')` as a CASE: the score
    is 1 + the number of thresholds at or below the value ('high'), or
    mirrored ('low'). NULL stays NULL."""
    k = len(thresholds)
    arms = []
    for i, t in enumerate(reversed(thresholds)):
        reached = k - i  # thresholds at or below value
        score = k + 1 - reached if low_is_good else reached + 1
        arms.append(f"WHEN {value} >= {t} THEN {score}")
    lowest = k + 1 if low_is_good else 1
    return f"CASE WHEN {value} IS NULL THEN NULL {' '.join(arms)} ELSE {lowest} END"


class DuckSql:
    """DuckDB SQL for one data set and as-of day.

    `tables` maps table names to Parquet paths or globs; `as_of` is a day,
    YYYY-MM-DD."""

    def __init__(self, tables: dict, as_of: str):
        self.tables = tables
        self.as_of = as_of
        self.day = f"DATE {quote(as_of)}"
        self.ts = f"TIMESTAMP {quote(as_of + ' 00:00:00')}"

    def prelude(self) -> str:
        """Temporary views over the Parquet files and the helpers every job
        uses: `purchases`, `lines` (purchased order lines with category and
        day) and the anniversary macro."""
        excluded = ", ".join(quote(s) for s in EXCLUDED_STATUSES)
        views = "\n".join(
            f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({quote(path)});"
            for name, path in self.tables.items()
        )
        return f"""{views}
CREATE OR REPLACE TEMP VIEW purchases AS
SELECT * FROM orders
WHERE customer_id IS NOT NULL
  AND lower(coalesce(status, '')) NOT IN ({excluded})
  AND order_ts < {self.ts};
CREATE OR REPLACE TEMP VIEW ev AS
SELECT customer_id, event, CAST(event_ts AS DATE) AS day FROM events
WHERE customer_id IS NOT NULL AND event_ts < {self.ts};
CREATE OR REPLACE TEMP VIEW lines AS
SELECT i.customer_id, i.order_id, CAST(i.order_ts AS DATE) AS day, p.category
FROM order_items i JOIN products p USING (product_id)
WHERE i.customer_id IS NOT NULL
  AND lower(coalesce(i.status, '')) NOT IN ({excluded})
  AND i.order_ts < {self.ts};
-- The anniversary of date d in year y; Feb 29 falls on Feb 28 in common years.
CREATE OR REPLACE TEMP MACRO anniversary_in(d, y) AS
  CASE WHEN month(d) = 2 AND day(d) = 29
            AND NOT ((y % 4 = 0 AND y % 100 <> 0) OR y % 400 = 0)
       THEN make_date(y, 2, 28)
       ELSE make_date(y, month(d), day(d)) END;
-- An anniversary of d falls in [lo, hi] (windows shorter than a year).
CREATE OR REPLACE TEMP MACRO anniversary_between(d, lo, hi) AS
  CASE WHEN anniversary_in(d, year(lo)) >= lo THEN anniversary_in(d, year(lo))
       ELSE anniversary_in(d, year(lo) + 1) END <= hi;
"""

    def metrics(self) -> str:
        """Order metrics of every purchasing customer."""
        return f"""SELECT customer_id,
       count(order_id) AS orders_count,
       sum(amount) AS amount_spent,
       avg(amount) AS avg_order_value,
       CAST(min(order_ts) AS DATE) AS first_order_date,
       CAST(max(order_ts) AS DATE) AS last_order_date,
       {self.day} - CAST(max(order_ts) AS DATE) AS days_since_last_order
FROM purchases GROUP BY customer_id"""

    def scored(self, metrics: str) -> str:
        """RFM quintile scores over a metrics relation, ties sharing a score:
        NTILE(5) worst first, then each run of equal values takes the
        smallest (its first row's) NTILE."""
        return f"""SELECT * EXCLUDE (r0, f0, m0),
       min(r0) OVER (PARTITION BY days_since_last_order) AS rfm_r,
       min(f0) OVER (PARTITION BY orders_count) AS rfm_f,
       min(m0) OVER (PARTITION BY amount_spent) AS rfm_m
FROM (
  SELECT *,
         ntile(5) OVER (ORDER BY days_since_last_order DESC) AS r0,
         ntile(5) OVER (ORDER BY orders_count) AS f0,
         ntile(5) OVER (ORDER BY amount_spent) AS m0
  FROM {metrics}
)"""

    # -- queries ---------------------------------------------------------

    def q1(self, out: str) -> str:
        return f"""{self.prelude()}
COPY (
  SELECT customer_id, max(order_ts) AS last_order_ts, count(*) AS orders, sum(amount) AS spent
  FROM purchases GROUP BY customer_id
) TO {quote(out)} (FORMAT parquet, COMPRESSION zstd);"""

    def q2(self) -> str:
        return f"""{self.prelude()}
SELECT count(*) AS members, sum(customer_id) AS id_sum
FROM customers
WHERE customer_id IN (SELECT customer_id FROM lines
                      WHERE category = 'Sofas' AND day BETWEEN {self.day} - 365 AND {self.day})
  AND customer_id NOT IN (SELECT customer_id FROM lines WHERE category = 'Coffee tables');"""

    def q5(self) -> str:
        return f"""{self.prelude()}
SELECT count(*) AS members, sum(customer_id) AS id_sum
FROM customers
WHERE customer_id IN (SELECT customer_id FROM ev
                      WHERE event = 'cart_add' AND day BETWEEN {self.day} - 3 AND {self.day})
  AND customer_id NOT IN (SELECT customer_id FROM lines
                          WHERE day BETWEEN {self.day} - 3 AND {self.day});"""

    def q3(self) -> str:
        cities = ", ".join(quote(c) for c in Q3_CITIES)
        return f"""{self.prelude()}
WITH scored AS ({self.scored('(' + self.metrics() + ')')})
SELECT count(*) AS members, sum(c.customer_id) AS id_sum
FROM customers c JOIN scored s USING (customer_id)
WHERE s.rfm_r >= 4
  AND c.city IN ({cities})
  AND anniversary_between(c.birthday, {self.day}, {self.day} + 30);"""

    def q4(self, out: str) -> str:
        r = bucket_case("m.days_since_last_order", RFM_THRESHOLDS["recency"], True)
        f = bucket_case("m.orders_count", RFM_THRESHOLDS["frequency"], False)
        m = bucket_case("m.amount_spent", RFM_THRESHOLDS["monetary"], False)
        return f"""{self.prelude()}
COPY (
  SELECT *, CAST(r AS VARCHAR) || CAST(f AS VARCHAR) || CAST(m AS VARCHAR) AS code,
         {GROUP_CASE.replace('rfm_r', 'r').replace('rfm_f', 'f')} AS "group"
  FROM (
    SELECT c.customer_id, m.days_since_last_order AS recency_days,
           m.orders_count AS frequency, m.amount_spent AS monetary,
           {r} AS r, {f} AS f, {m} AS m
    FROM customers c LEFT JOIN ({self.metrics()}) m USING (customer_id)
  )
  ORDER BY customer_id
) TO {quote(out)} (FORMAT parquet, COMPRESSION zstd);"""

    # -- the refresh job -------------------------------------------------

    @staticmethod
    def store_schema() -> str:
        """The DuckDB side's segment store: the same tables as segql's
        (README "Saved segments"), in one database file."""
        values = ", ".join(
            f"({quote(s.code)}, {quote(s.condition)}, now())" for s in SEGMENTS
        )
        return f"""CREATE TABLE segments (code VARCHAR, condition VARCHAR, created_at TIMESTAMP);
CREATE TABLE segment_membership (segment VARCHAR, customer_id BIGINT, entered_at TIMESTAMP,
  exited_at TIMESTAMP, entered_refresh BIGINT, exited_refresh BIGINT);
CREATE TABLE segment_events (event_id BIGINT, refresh_id BIGINT, segment VARCHAR,
  customer_id BIGINT, event VARCHAR, "at" TIMESTAMP, recorded_at TIMESTAMP);
CREATE TABLE segment_sizes (segment VARCHAR, refresh_id BIGINT, refreshed_at TIMESTAMP,
  as_of TIMESTAMP, size BIGINT, entered BIGINT, exited BIGINT);
CREATE TABLE segment_refreshes (refresh_id BIGINT, kind VARCHAR, started_at TIMESTAMP,
  committed_at TIMESTAMP, as_of TIMESTAMP);
INSERT INTO segments VALUES {values};
SELECT count(*) AS segments FROM segments;"""

    def refresh(self) -> str:
        """One refresh of every segment, as one transaction: metrics and
        scores once, each condition in dependency order, the difference
        with the open stays written as closed and opened stays, events and
        a size row per segment. Prints segment, size, entered, exited."""
        members = "\n".join(
            f"INSERT INTO new_members SELECT {quote(s.code)}, customer_id FROM cust"
            f" WHERE {s.duck.format(day=self.day)};"
            for s in SEGMENTS
        )
        codes = ", ".join(f"({quote(s.code)})" for s in SEGMENTS)
        at = self.ts
        return f"""{self.prelude()}
BEGIN TRANSACTION;
SET VARIABLE refresh_id = (SELECT coalesce(max(refresh_id), 0) + 1 FROM segment_refreshes);
SET VARIABLE started_at = now();
CREATE TEMP TABLE metrics AS {self.metrics()};
CREATE TEMP TABLE cust AS
SELECT c.*, s.* EXCLUDE (customer_id), {GROUP_CASE} AS rfm_group
FROM customers c LEFT JOIN ({self.scored('metrics')}) s USING (customer_id);
CREATE TEMP TABLE new_members (segment VARCHAR, customer_id BIGINT);
{members}
CREATE TEMP TABLE codes AS SELECT * FROM (VALUES {codes}) t(segment);
CREATE TEMP TABLE exits AS
  SELECT segment, customer_id FROM segment_membership
  WHERE exited_at IS NULL AND segment IN (SELECT segment FROM codes)
  EXCEPT SELECT segment, customer_id FROM new_members;
CREATE TEMP TABLE entries AS
  SELECT segment, customer_id FROM new_members
  EXCEPT SELECT segment, customer_id FROM segment_membership WHERE exited_at IS NULL;
UPDATE segment_membership
  SET exited_at = {at}, exited_refresh = getvariable('refresh_id')
  FROM exits e
  WHERE segment_membership.exited_at IS NULL
    AND segment_membership.segment = e.segment
    AND segment_membership.customer_id = e.customer_id;
INSERT INTO segment_membership
  SELECT segment, customer_id, {at}, NULL, getvariable('refresh_id'), NULL FROM entries;
SET VARIABLE next_event = (SELECT coalesce(max(event_id), 0) FROM segment_events);
INSERT INTO segment_events
  SELECT getvariable('next_event') + row_number() OVER (ORDER BY segment, event, customer_id),
         getvariable('refresh_id'), segment, customer_id, event, {at}, getvariable('started_at')
  FROM (SELECT segment, customer_id, 'entered' AS event FROM entries
        UNION ALL SELECT segment, customer_id, 'exited' FROM exits);
INSERT INTO segment_sizes
  SELECT segment, getvariable('refresh_id'), getvariable('started_at'), {at},
         coalesce(n.size, 0), coalesce(en.n, 0), coalesce(ex.n, 0)
  FROM codes
  LEFT JOIN (SELECT segment, count(*) AS size FROM new_members GROUP BY ALL) n USING (segment)
  LEFT JOIN (SELECT segment, count(*) AS n FROM entries GROUP BY ALL) en USING (segment)
  LEFT JOIN (SELECT segment, count(*) AS n FROM exits GROUP BY ALL) ex USING (segment);
INSERT INTO segment_refreshes
  VALUES (getvariable('refresh_id'), 'refresh', getvariable('started_at'), now(), {at});
COMMIT;
SELECT segment, size, entered, exited FROM segment_sizes
WHERE refresh_id = getvariable('refresh_id') ORDER BY segment;"""


def segql_create_segments() -> str:
    """The batch that saves the segments in a fresh segql store."""
    return "\n".join(f"CREATE SEGMENT {s.code} AS {s.condition};" for s in SEGMENTS) + "\n"


def segql_rfm_section() -> str:
    """The [rfm] section of Q4's project file."""
    t = RFM_THRESHOLDS
    fmt = lambda values: "[" + ", ".join(str(v) for v in values) + "]"  # noqa: E731
    return f"""[rfm]
bins = 5
scheme = "thresholds"
recency_thresholds = {fmt(t['recency'])}
frequency_thresholds = {fmt(t['frequency'])}
monetary_thresholds = {fmt(t['monetary'])}
"""
