-- count
-- rule: count(view_course where category = "python", 7d) >= 3
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: duckdb
WITH ev_raw AS (
  SELECT
    person_id,
    event,
    EPOCH_US("timestamp") AS t,
    JSON_EXTRACT(properties, '/category') AS p0
  FROM events_with_person
  WHERE
    event IN ('view_course')
    AND NOT person_id IS NULL
    AND "timestamp" <= CAST('2024-06-10 12:00:00' AS TIMESTAMP)
), ev AS (
  SELECT
    *,
    CASE
      WHEN NOT p0 IS NULL AND NOT JSON_TYPE(p0) IN ('ARRAY', 'OBJECT', 'NULL')
      THEN JSON_EXTRACT_STRING(p0, '$')
    END AS p0_t
  FROM ev_raw
), ev_k0 AS (
  SELECT
    person_id,
    COUNT(*) FILTER(WHERE
      (
        event = 'view_course' AND COALESCE((
          p0_t = 'python'
        ), FALSE)
      )
      AND t > 1717416000000000) AS e0
  FROM ev
  WHERE
    event = 'view_course'
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
  AND COALESCE((
    CAST(COALESCE(k0.e0, 0) AS DOUBLE) >= CAST(3.0 AS DOUBLE)
  ), FALSE)
ORDER BY
  p.person_id;
