-- did
-- rule: did(purchase where amount > 100, 30d)
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: spark
WITH ev_raw AS (
  SELECT
    person_id,
    event,
    UNIX_MICROS(CAST(`timestamp` AS TIMESTAMP)) AS t,
    TRY_VARIANT_GET(properties, '$.amount') AS p0
  FROM events_with_person
  WHERE
    event IN ('purchase')
    AND NOT person_id IS NULL
    AND `timestamp` <= CAST('2024-06-10 12:00:00' AS TIMESTAMP)
), ev AS (
  SELECT
    *,
    CASE
      WHEN (
        (
          NOT p0 IS NULL
          AND NOT CASE SCHEMA_OF_VARIANT(p0)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(p0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          CASE SCHEMA_OF_VARIANT(p0)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(p0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR')
          AND CASE
            WHEN SCHEMA_OF_VARIANT(p0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
            THEN CONCAT(TRY_VARIANT_GET(p0, '$', 'string'), '.0')
            ELSE TRY_VARIANT_GET(p0, '$', 'string')
          END RLIKE '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$'
        )
      )
      AND TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(p0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(p0, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(p0, '$', 'string')
      END AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(p0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(p0, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(p0, '$', 'string')
      END AS DOUBLE)
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
