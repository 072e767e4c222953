-- tags_audiences
-- rule: has_tag(activity_level, "high") and not in_audience(lapsed)
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: duckdb
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
      WHEN NOT t0 IS NULL AND NOT JSON_TYPE(t0) IN ('ARRAY', 'OBJECT', 'NULL')
      THEN JSON_EXTRACT_STRING(t0, '$')
    END AS t0_t,
    CASE
      WHEN (
        (
          NOT t0 IS NULL
          AND NOT JSON_TYPE(t0) IN ('VARCHAR', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL')
        )
        OR (
          JSON_TYPE(t0) IN ('VARCHAR')
          AND REGEXP_MATCHES(
            JSON_EXTRACT_STRING(t0, '$'),
            '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$'
          )
        )
      )
      AND TRY_CAST(JSON_EXTRACT_STRING(t0, '$') AS DOUBLE) BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308
      THEN TRY_CAST(JSON_EXTRACT_STRING(t0, '$') AS DOUBLE)
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
              NOT t.t0 IS NULL AND JSON_TYPE(t.t0) <> 'NULL'
            )
            AND NOT COALESCE((
              JSON_TYPE(t.t0) = 'BOOLEAN' AND t.t0_t = 'false'
            ), FALSE)
          )
          AND CASE
            WHEN JSON_TYPE(t.t0) = 'ARRAY'
            THEN LEN(
              LIST_FILTER(
                JSON_EXTRACT(t.t0, '$[*]'),
                LAMBDA item : COALESCE(
                  (
                    CASE
                      WHEN NOT item IS NULL AND NOT JSON_TYPE(item) IN ('ARRAY', 'OBJECT', 'NULL')
                      THEN JSON_EXTRACT_STRING(item, '$')
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
