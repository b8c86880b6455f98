-- Fixed-threshold RFM (Annex Cloud style) on the bundled Online Retail data:
-- recency 0-6 / 6-12 / 12+ months, frequency 1 / 2-5 / 6+ orders,
-- spend 0-49 / 50-99 / 100+. Each threshold is the lowest value of the next
-- bucket up; 3 is best.
SELECT rfm_code(
         rfm_bucket(recency_days, [183, 365], 'low'),
         rfm_bucket(frequency, [2, 6], 'high'),
         rfm_bucket(monetary, [50, 100], 'high')) AS code,
       count(*) AS customers
FROM (
  SELECT customer_id,
         CAST(DATE '2011-12-10' - CAST(max(order_ts) AS DATE) AS BIGINT) AS recency_days,
         count(DISTINCT order_id) AS frequency,
         sum(amount) AS monetary
  FROM purchases()
  GROUP BY customer_id
)
GROUP BY 1
ORDER BY customers DESC, code;
