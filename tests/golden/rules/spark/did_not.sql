-- did_not
-- rule: not did(purchase, 1d)
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: spark
WITH ev_raw AS (
  SELECT
    person_id,
    event,
    UNIX_MICROS(CAST(`timestamp` AS TIMESTAMP)) AS t
  FROM events_with_person
  WHERE
    event IN ('purchase')
    AND NOT person_id IS NULL
    AND `timestamp` <= CAST('2024-06-10 12:00:00' AS TIMESTAMP)
), ev_k0 AS (
  SELECT
    person_id,
    COUNT(*) FILTER(WHERE
      event = 'purchase' AND t > 1717934400000000) AS e0
  FROM ev_raw
  GROUP BY
    person_id
)
SELECT
  p.person_id
FROM persons AS p
LEFT JOIN ev_k0 AS k0
  ON k0.person_id = p.person_id
WHERE
  p.merged_into IS NULL AND NOT (
    COALESCE(k0.e0, 0) > 0
  )
ORDER BY
  p.person_id;
