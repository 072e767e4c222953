-- aggregates
-- rule: sum(amount of purchase, 90d) > 1000 or avg(amount of purchase) >= 50 or count_distinct(course_id of view_course, between("2024-06-01", "2024-06-08")) > 2
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: spark
WITH ev_raw AS (
  SELECT
    person_id,
    event,
    UNIX_MICROS(CAST(`timestamp` AS TIMESTAMP)) AS t,
    CASE WHEN event IN ('purchase') THEN TRY_VARIANT_GET(properties, '$.amount') END AS p0,
    CASE
      WHEN event IN ('view_course')
      THEN TRY_VARIANT_GET(properties, '$.course_id')
    END AS p1
  FROM events_with_person
  WHERE
    event IN ('purchase', 'view_course')
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
    END AS p0_n,
    CASE
      WHEN NOT p1 IS NULL
      AND NOT CASE SCHEMA_OF_VARIANT(p1)
        WHEN 'STRING'
        THEN 'VARCHAR'
        WHEN 'VOID'
        THEN 'NULL'
        ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(p1), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
      END IN ('ARRAY', 'OBJECT', 'NULL')
      THEN CASE
        WHEN SCHEMA_OF_VARIANT(p1) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(p1, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(p1, '$', 'string')
      END
    END AS p1_t
  FROM ev_raw
), ev_k0 AS (
  SELECT
    person_id,
    SUM(p0_n) FILTER(WHERE
      event = 'purchase' AND t > 1710244800000000) AS e0,
    AVG(p0_n) FILTER(WHERE
      event = 'purchase') AS e1,
    COUNT(DISTINCT p1_t) FILTER(WHERE
      event = 'view_course' AND (
        t >= 1717200000000000 AND t < 1717804800000000
      )) AS e2
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
  p.merged_into IS NULL
  AND (
    (
      COALESCE((
        COALESCE(k0.e0, CAST(0.0 AS DOUBLE)) > CAST(1000.0 AS DOUBLE)
      ), FALSE)
    )
    OR (
      COALESCE((
        k0.e1 >= CAST(50.0 AS DOUBLE)
      ), FALSE)
    )
    OR (
      COALESCE((
        CAST(COALESCE(k0.e2, 0) AS DOUBLE) > CAST(2.0 AS DOUBLE)
      ), FALSE)
    )
  )
ORDER BY
  p.person_id;
