-- Year-ignoring windows on the Online Retail customers. The source has no
-- birthdays, so these use `created_at` (the first invoice): the same
-- functions work on a birthday column.

-- First-order anniversary within the 7 days from 2011-12-10.
SELECT count(*) AS anniversary_next_7_days
FROM customers
WHERE anniversary_between(created_at, DATE '2011-12-10', DATE '2011-12-10' + INTERVAL '7 days');

-- First order between 25.07 and 28.09 of any year, and between 02.12 and
-- 03.01 (over New Year).
SELECT count(*) FILTER (WHERE in_yearly_window(created_at, '07-25', '09-28')) AS late_summer,
       count(*) FILTER (WHERE in_yearly_window(created_at, '12-02', '01-03')) AS around_new_year
FROM customers;

-- Days to the next anniversary, nearest first.
SELECT customer_id, CAST(created_at AS DATE) AS first_order,
       days_to_anniversary(created_at, DATE '2011-12-10') AS days_left
FROM customers
ORDER BY days_left, customer_id
LIMIT 5;
