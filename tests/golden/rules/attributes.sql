-- attributes
-- rule: attr.city in ["上海", "北京"] and attr.age between 18 and 30 and attr.interests contains "python" and attr.email is not set
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: duckdb
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
      WHEN NOT a0 IS NULL AND NOT JSON_TYPE(a0) IN ('ARRAY', 'OBJECT', 'NULL')
      THEN JSON_EXTRACT_STRING(a0, '$')
    END AS a0_t,
    CASE
      WHEN (
        (
          NOT a0 IS NULL
          AND NOT JSON_TYPE(a0) IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          JSON_TYPE(a0) IN ('VARCHAR')
          AND REGEXP_MATCHES(
            JSON_EXTRACT_STRING(a0, '$'),
            '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$'
          )
        )
      )
      AND TRY_CAST(JSON_EXTRACT_STRING(a0, '$') AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(JSON_EXTRACT_STRING(a0, '$') AS DOUBLE)
    END AS a0_n,
    CASE
      WHEN NOT a1 IS NULL AND NOT JSON_TYPE(a1) IN ('ARRAY', 'OBJECT', 'NULL')
      THEN JSON_EXTRACT_STRING(a1, '$')
    END AS a1_t,
    CASE
      WHEN (
        (
          NOT a1 IS NULL
          AND NOT JSON_TYPE(a1) IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          JSON_TYPE(a1) IN ('VARCHAR')
          AND REGEXP_MATCHES(
            JSON_EXTRACT_STRING(a1, '$'),
            '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$'
          )
        )
      )
      AND TRY_CAST(JSON_EXTRACT_STRING(a1, '$') AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(JSON_EXTRACT_STRING(a1, '$') AS DOUBLE)
    END AS a1_n,
    CASE
      WHEN NOT a2 IS NULL AND NOT JSON_TYPE(a2) IN ('ARRAY', 'OBJECT', 'NULL')
      THEN JSON_EXTRACT_STRING(a2, '$')
    END AS a2_t,
    CASE
      WHEN (
        (
          NOT a2 IS NULL
          AND NOT JSON_TYPE(a2) IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          JSON_TYPE(a2) IN ('VARCHAR')
          AND REGEXP_MATCHES(
            JSON_EXTRACT_STRING(a2, '$'),
            '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$'
          )
        )
      )
      AND TRY_CAST(JSON_EXTRACT_STRING(a2, '$') AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(JSON_EXTRACT_STRING(a2, '$') AS DOUBLE)
    END AS a2_n,
    CASE
      WHEN NOT a3 IS NULL AND NOT JSON_TYPE(a3) IN ('ARRAY', 'OBJECT', 'NULL')
      THEN JSON_EXTRACT_STRING(a3, '$')
    END AS a3_t,
    CASE
      WHEN (
        (
          NOT a3 IS NULL
          AND NOT JSON_TYPE(a3) IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          JSON_TYPE(a3) IN ('VARCHAR')
          AND REGEXP_MATCHES(
            JSON_EXTRACT_STRING(a3, '$'),
            '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$'
          )
        )
      )
      AND TRY_CAST(JSON_EXTRACT_STRING(a3, '$') AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(JSON_EXTRACT_STRING(a3, '$') AS DOUBLE)
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
            WHEN JSON_TYPE(a.a2) = 'ARRAY'
            THEN LEN(
              LIST_FILTER(
                JSON_EXTRACT(a.a2, '$[*]'),
                LAMBDA item : COALESCE(
                  (
                    CASE
                      WHEN NOT item IS NULL AND NOT JSON_TYPE(item) IN ('ARRAY', 'OBJECT', 'NULL')
                      THEN JSON_EXTRACT_STRING(item, '$')
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
      NOT COALESCE((
        NOT a.a3 IS NULL AND JSON_TYPE(a.a3) <> 'NULL'
      ), FALSE)
    )
  )
ORDER BY
  p.person_id;
