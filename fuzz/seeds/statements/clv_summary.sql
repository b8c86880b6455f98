-- lifetimes-style summary (frequency, recency, T, monetary value at daily
-- granularity) of the ten most frequent Online Retail customers, as of
-- 2011-12-10.
SELECT customer_id,
       s['frequency'] AS frequency,
       s['recency'] AS recency,
       s['t'] AS t,
       round(s['monetary_value'], 2) AS monetary_value
FROM (
  SELECT customer_id, clv_summary(order_ts, amount, DATE '2011-12-10') AS s
  FROM purchases()
  GROUP BY customer_id
)
ORDER BY frequency DESC, customer_id
LIMIT 10;
