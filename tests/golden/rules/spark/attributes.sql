-- attributes
-- rule: attr.city in ["上海", "北京"] and attr.age between 18 and 30 and attr.interests contains "python" and attr.email is not set
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: spark
WITH attrs_raw AS (
  SELECT
    person_id,
    ANY_VALUE(value) FILTER(WHERE
      name = 'city') AS a0,
    ANY_VALUE(value) FILTER(WHERE
      name = 'age') AS a1,
    ANY_VALUE(value) FILTER(WHERE
      name = 'interests') AS a2,
    ANY_VALUE(value) FILTER(WHERE
      name = 'email') AS a3
  FROM person_attributes
  WHERE
    name IN ('city', 'age', 'interests', 'email')
  GROUP BY
    person_id
), attrs AS (
  SELECT
    *,
    CASE
      WHEN NOT a0 IS NULL
      AND NOT CASE SCHEMA_OF_VARIANT(a0)
        WHEN 'STRING'
        THEN 'VARCHAR'
        WHEN 'VOID'
        THEN 'NULL'
        ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
      END IN ('ARRAY', 'OBJECT', 'NULL')
      THEN CASE
        WHEN SCHEMA_OF_VARIANT(a0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a0, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a0, '$', 'string')
      END
    END AS a0_t,
    CASE
      WHEN (
        (
          NOT a0 IS NULL
          AND NOT CASE SCHEMA_OF_VARIANT(a0)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          CASE SCHEMA_OF_VARIANT(a0)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a0), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR')
          AND CASE
            WHEN SCHEMA_OF_VARIANT(a0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
            THEN CONCAT(TRY_VARIANT_GET(a0, '$', 'string'), '.0')
            ELSE TRY_VARIANT_GET(a0, '$', 'string')
          END RLIKE '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$'
        )
      )
      AND TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(a0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a0, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a0, '$', 'string')
      END AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(a0) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a0, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a0, '$', 'string')
      END AS DOUBLE)
    END AS a0_n,
    CASE
      WHEN NOT a1 IS NULL
      AND NOT CASE SCHEMA_OF_VARIANT(a1)
        WHEN 'STRING'
        THEN 'VARCHAR'
        WHEN 'VOID'
        THEN 'NULL'
        ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a1), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
      END IN ('ARRAY', 'OBJECT', 'NULL')
      THEN CASE
        WHEN SCHEMA_OF_VARIANT(a1) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a1, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a1, '$', 'string')
      END
    END AS a1_t,
    CASE
      WHEN (
        (
          NOT a1 IS NULL
          AND NOT CASE SCHEMA_OF_VARIANT(a1)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a1), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          CASE SCHEMA_OF_VARIANT(a1)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a1), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR')
          AND CASE
            WHEN SCHEMA_OF_VARIANT(a1) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
            THEN CONCAT(TRY_VARIANT_GET(a1, '$', 'string'), '.0')
            ELSE TRY_VARIANT_GET(a1, '$', 'string')
          END RLIKE '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$'
        )
      )
      AND TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(a1) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a1, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a1, '$', 'string')
      END AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(a1) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a1, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a1, '$', 'string')
      END AS DOUBLE)
    END AS a1_n,
    CASE
      WHEN NOT a2 IS NULL
      AND NOT CASE SCHEMA_OF_VARIANT(a2)
        WHEN 'STRING'
        THEN 'VARCHAR'
        WHEN 'VOID'
        THEN 'NULL'
        ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a2), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
      END IN ('ARRAY', 'OBJECT', 'NULL')
      THEN CASE
        WHEN SCHEMA_OF_VARIANT(a2) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a2, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a2, '$', 'string')
      END
    END AS a2_t,
    CASE
      WHEN (
        (
          NOT a2 IS NULL
          AND NOT CASE SCHEMA_OF_VARIANT(a2)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a2), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          CASE SCHEMA_OF_VARIANT(a2)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a2), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR')
          AND CASE
            WHEN SCHEMA_OF_VARIANT(a2) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
            THEN CONCAT(TRY_VARIANT_GET(a2, '$', 'string'), '.0')
            ELSE TRY_VARIANT_GET(a2, '$', 'string')
          END RLIKE '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$'
        )
      )
      AND TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(a2) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a2, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a2, '$', 'string')
      END AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(a2) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a2, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a2, '$', 'string')
      END AS DOUBLE)
    END AS a2_n,
    CASE
      WHEN NOT a3 IS NULL
      AND NOT CASE SCHEMA_OF_VARIANT(a3)
        WHEN 'STRING'
        THEN 'VARCHAR'
        WHEN 'VOID'
        THEN 'NULL'
        ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a3), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
      END IN ('ARRAY', 'OBJECT', 'NULL')
      THEN CASE
        WHEN SCHEMA_OF_VARIANT(a3) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a3, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a3, '$', 'string')
      END
    END AS a3_t,
    CASE
      WHEN (
        (
          NOT a3 IS NULL
          AND NOT CASE SCHEMA_OF_VARIANT(a3)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a3), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          CASE SCHEMA_OF_VARIANT(a3)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a3), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END IN ('VARCHAR')
          AND CASE
            WHEN SCHEMA_OF_VARIANT(a3) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
            THEN CONCAT(TRY_VARIANT_GET(a3, '$', 'string'), '.0')
            ELSE TRY_VARIANT_GET(a3, '$', 'string')
          END RLIKE '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$'
        )
      )
      AND TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(a3) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a3, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a3, '$', 'string')
      END AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(CASE
        WHEN SCHEMA_OF_VARIANT(a3) RLIKE '^DECIMAL\\(([1-9]|1[0-6]),0\\)$'
        THEN CONCAT(TRY_VARIANT_GET(a3, '$', 'string'), '.0')
        ELSE TRY_VARIANT_GET(a3, '$', 'string')
      END AS DOUBLE)
    END AS a3_n
  FROM attrs_raw
)
SELECT
  p.person_id
FROM persons AS p
LEFT JOIN attrs AS a
  ON a.person_id = p.person_id
WHERE
  p.merged_into IS NULL
  AND (
    (
      COALESCE(
        (
          COALESCE((
            a.a0_t = '上海'
          ), FALSE) OR COALESCE((
            a.a0_t = '北京'
          ), FALSE)
        ),
        FALSE
      )
    )
    AND (
      COALESCE(
        (
          COALESCE((
            a.a1_n >= CAST(18.0 AS DOUBLE)
          ), FALSE)
          AND COALESCE((
            a.a1_n <= CAST(30.0 AS DOUBLE)
          ), FALSE)
        ),
        FALSE
      )
    )
    AND (
      COALESCE(
        (
          CASE
            WHEN CASE SCHEMA_OF_VARIANT(a.a2)
              WHEN 'STRING'
              THEN 'VARCHAR'
              WHEN 'VOID'
              THEN 'NULL'
              ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a.a2), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
            END = 'ARRAY'
            THEN SIZE(
              FILTER(
                TRY_VARIANT_GET(a.a2, '$', 'array<variant>'),
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
                    END = 'python'
                  ),
                  FALSE
                )
              )
            ) > 0
            ELSE CONTAINS(a.a2_t, 'python')
          END
        ),
        FALSE
      )
    )
    AND (
      NOT COALESCE(
        (
          NOT a.a3 IS NULL
          AND CASE SCHEMA_OF_VARIANT(a.a3)
            WHEN 'STRING'
            THEN 'VARCHAR'
            WHEN 'VOID'
            THEN 'NULL'
            ELSE REGEXP_REPLACE(SCHEMA_OF_VARIANT(a.a3), '(?s)^(ARRAY|OBJECT)<.*$', '$1')
          END <> 'NULL'
        ),
        FALSE
      )
    )
  )
ORDER BY
  p.person_id;
