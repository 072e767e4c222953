-- sequence
-- rule: seq(view_course, then purchase within 24h, 7d)
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: spark
WITH ev_raw AS (
  SELECT
    person_id,
    event,
    UNIX_MICROS(CAST(`timestamp` AS TIMESTAMP)) AS t
  FROM events_with_person
  WHERE
    event IN ('purchase', 'view_course')
    AND NOT person_id IS NULL
    AND `timestamp` <= CAST('2024-06-10 12:00:00' AS TIMESTAMP)
), ev_next AS (
  SELECT
    *,
    MIN(CASE WHEN event = 'purchase' THEN t END) OVER (
      PARTITION BY person_id
      ORDER BY t NULLS LAST
      RANGE BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
    ) AS n0
  FROM ev_raw
  WHERE
    event IN ('purchase', 'view_course') AND t >= 1717416000000001
), ev_seq AS (
  SELECT
    person_id,
    COUNT(*) FILTER(WHERE
      (
        event = 'view_course' AND t > 1717416000000000
      )
      AND (
        NOT n0 IS NULL AND n0 <= t + 86400000000
      )) AS s0
  FROM ev_next
  GROUP BY
    person_id
)
SELECT
  p.person_id
FROM persons AS p
LEFT JOIN ev_seq AS s
  ON s.person_id = p.person_id
WHERE
  p.merged_into IS NULL AND COALESCE(s.s0, 0) > 0
ORDER BY
  p.person_id;
