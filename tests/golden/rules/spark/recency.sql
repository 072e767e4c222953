-- recency
-- rule: last(purchase) before 30d and first(signup) after "2024-01-01"
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: spark
WITH ev_raw AS (
  SELECT
    person_id,
    event,
    UNIX_MICROS(CAST(`timestamp` AS TIMESTAMP)) AS t
  FROM events_with_person
  WHERE
    event IN ('purchase', 'signup')
    AND NOT person_id IS NULL
    AND `timestamp` <= CAST('2024-06-10 12:00:00' AS TIMESTAMP)
), ev_k0 AS (
  SELECT
    person_id,
    MAX(t) FILTER(WHERE
      event = 'purchase') AS e0,
    MIN(t) FILTER(WHERE
      event = 'signup') AS e1
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
  p.merged_into IS NULL
  AND (
    (
      COALESCE((
        k0.e0 <= 1715428800000000
      ), FALSE)
    )
    AND (
      COALESCE((
        k0.e1 >= 1704067200000000
      ), FALSE)
    )
  )
ORDER BY
  p.person_id;
