-- consent
-- rule: consent(marketing) and not consent(analytics, denied)
-- as_of: 2024-06-10T12:00:00+00:00

-- engine: spark
WITH consent AS (
  SELECT
    person_id,
    ANY_VALUE(granted) FILTER(WHERE
      purpose = 'marketing') AS g0,
    ANY_VALUE(granted) FILTER(WHERE
      purpose = 'analytics') AS g1
  FROM person_consent
  WHERE
    purpose IN ('marketing', 'analytics')
  GROUP BY
    person_id
)
SELECT
  p.person_id
FROM persons AS p
LEFT JOIN consent AS c
  ON c.person_id = p.person_id
WHERE
  p.merged_into IS NULL
  AND (
    (
      COALESCE(c.g0, FALSE)
    ) AND (
      NOT (
        NOT COALESCE(c.g1, TRUE)
      )
    )
  )
ORDER BY
  p.person_id;
