-- RFM report on the bundled UCI Online Retail data, as of 2011-12-10 (the
-- day after the last invoice). purchases() gives the orders that count as
-- purchases by the project's [purchases] rule (here: not cancelled, not a
-- bad-debt adjustment), with a customer id, in segql's column names.

CREATE VIEW purchases AS
SELECT customer_id, order_id, order_ts, amount
FROM purchases();

-- Recency in whole days from the last purchase day, frequency in orders,
-- monetary value in gross spend; each scored 1 (worst) to 5 (best) by
-- quantile, equal values sharing a score.
CREATE VIEW rfm AS
SELECT customer_id, recency_days, frequency, monetary,
       rfm_quantile(recency_days, 5, 'low') OVER () AS r,
       rfm_quantile(frequency, 5, 'high') OVER () AS f,
       rfm_quantile(monetary, 5, 'high') OVER () AS m
FROM (
  SELECT customer_id,
         CAST(DATE '2011-12-10' - CAST(max(order_ts) AS DATE) AS BIGINT) AS recency_days,
         count(DISTINCT order_id) AS frequency,
         sum(amount) AS monetary
  FROM purchases
  GROUP BY customer_id
);

-- Customers, spend and typical behaviour per RFM group.
SELECT rfm_segment(r, f) AS segment,
       count(*) AS customers,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS pct,
       CAST(sum(monetary) AS DECIMAL(18, 2)) AS spend,
       CAST(median(recency_days) AS BIGINT) AS median_recency_days,
       CAST(median(frequency) AS BIGINT) AS median_orders
FROM rfm
GROUP BY rfm_segment(r, f)
ORDER BY spend DESC;
