-- did
-- rule: did(purchase where amount > 100, 30d)
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: duckdb
WITH ev_raw AS (
  SELECT
    person_id,
    event,
    EPOCH_US("timestamp") AS t,
    JSON_EXTRACT(properties, '/amount') AS p0
  FROM events_with_person
  WHERE
    event IN ('purchase')
    AND NOT person_id IS NULL
    AND "timestamp" <= CAST('2024-06-10 12:00:00' AS TIMESTAMP)
), ev AS (
  SELECT
    *,
    CASE
      WHEN (
        (
          NOT p0 IS NULL
          AND NOT JSON_TYPE(p0) IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          JSON_TYPE(p0) IN ('VARCHAR')
          AND REGEXP_MATCHES(
            JSON_EXTRACT_STRING(p0, '$'),
            '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$'
          )
        )
      )
      AND TRY_CAST(JSON_EXTRACT_STRING(p0, '$') AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(JSON_EXTRACT_STRING(p0, '$') AS DOUBLE)
    END AS p0_n
  FROM ev_raw
), ev_k0 AS (
  SELECT
    person_id,
    COUNT(*) FILTER(WHERE
      (
        event = 'purchase' AND COALESCE((
          p0_n > CAST(100.0 AS DOUBLE)
        ), FALSE)
      )
      AND t > 1715428800000000) AS e0
  FROM ev
  WHERE
    event = 'purchase'
  GROUP BY
    person_id
)
SELECT
  p.person_id
FROM persons AS p
LEFT JOIN ev_k0 AS k0
  ON k0.person_id = p.person_id
WHERE
  p.merged_into IS NULL AND COALESCE(k0.e0, 0) > 0
ORDER BY
  p.person_id;
