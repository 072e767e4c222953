-- tags_audiences
-- rule: has_tag(activity_level, "high") and not in_audience(lapsed)
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: spark
WITH tags_raw AS (
  SELECT
    person_id,
    ANY_VALUE(value) FILTER(WHERE
      tag = 'activity_level') AS t0
  FROM test_tag_values
  WHERE
    tag IN ('activity_level')
  GROUP BY
    person_id
), tags AS (
  SELECT
    *,
    CASE
      WHEN NOT t0 IS NULL
      AND NOT CASE SCHEMA_OF_VARIANT(t0)
        WHEN 'STRING'
        THEN 'VARCHAR'
        WHEN 'VOID'
        THEN 'NULL'
        ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(t0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
      END IN ('ARRAY', 'OBJECT', 'NULL')
      THEN CASE
        WHEN SCHEMA_OF_VARIANT(t0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(t0, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(t0, '$', 'string')
      END
    END AS t0_t,
    CASE
      WHEN (
        (
          NOT t0 IS NULL
          AND NOT CASE SCHEMA_OF_VARIANT(t0)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(t0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          CASE SCHEMA_OF_VARIANT(t0)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(t0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR')
          AND CASE
            WHEN SCHEMA_OF_VARIANT(t0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
            THEN CONCAT(TRY_VARIANT_GET(t0, '$', 'string'), '.0')
            ELSE TRY_VARIANT_GET(t0, '$', 'string')
          END RLIKE '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$'
        )
      )
      AND TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(t0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(t0, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(t0, '$', 'string')
      END AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(t0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(t0, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(t0, '$', 'string')
      END AS DOUBLE)
    END AS t0_n
  FROM tags_raw
), memberships AS (
  SELECT
    person_id,
    COUNT(*) FILTER(WHERE
      audience = 'lapsed') AS m0
  FROM test_audience_members
  GROUP BY
    person_id
)
SELECT
  p.person_id
FROM persons AS p
LEFT JOIN tags AS t
  ON t.person_id = p.person_id
LEFT JOIN memberships AS m
  ON m.person_id = p.person_id
WHERE
  p.merged_into IS NULL
  AND (
    (
      COALESCE(
        (
          (
            (
              NOT t.t0 IS NULL
              AND CASE SCHEMA_OF_VARIANT(t.t0)
                WHEN 'STRING'
                THEN 'VARCHAR'
                WHEN 'VOID'
                THEN 'NULL'
                ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(t.t0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
              END <> 'NULL'
            )
            AND NOT COALESCE(
              (
                CASE SCHEMA_OF_VARIANT(t.t0)
                  WHEN 'STRING'
                  THEN 'VARCHAR'
                  WHEN 'VOID'
                  THEN 'NULL'
                  ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(t.t0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
                END = 'BOOLEAN'
                AND t.t0_t = 'false'
              ),
              FALSE
            )
          )
          AND CASE
            WHEN CASE SCHEMA_OF_VARIANT(t.t0)
              WHEN 'STRING'
              THEN 'VARCHAR'
              WHEN 'VOID'
              THEN 'NULL'
              ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(t.t0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
            END = 'ARRAY'
            THEN SIZE(
              FILTER(
                TRY_VARIANT_GET(t.t0, '$', 'array<variant>'),
                item -> COALESCE(
                  (
                    CASE
                      WHEN NOT item IS NULL
                      AND NOT CASE SCHEMA_OF_VARIANT(item)
                        WHEN 'STRING'
                        THEN 'VARCHAR'
                        WHEN 'VOID'
                        THEN 'NULL'
                        ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(item), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
                      END IN ('ARRAY', 'OBJECT', 'NULL')
                      THEN CASE
                        WHEN SCHEMA_OF_VARIANT(item) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
                        THEN CONCAT(TRY_VARIANT_GET(item, '$', 'string'), '.0')
                        ELSE TRY_VARIANT_GET(item, '$', 'string')
                      END
                    END = 'high'
                  ),
                  FALSE
                )
              )
            ) > 0
            ELSE t.t0_t = 'high'
          END
        ),
        FALSE
      )
    )
    AND (
      NOT (
        COALESCE(m.m0, 0) > 0
      )
    )
  )
ORDER BY
  p.person_id;
