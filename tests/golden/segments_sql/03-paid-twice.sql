-- did order_paid >= 2 in last 90d where amount_fen >= 10000
SELECT DISTINCT
  "t2"."person_id"
FROM (
  SELECT
    "t1"."person_id",
    COUNT(*) AS "v"
  FROM (
    SELECT
      *
    FROM "events_resolved" AS "t0"
    WHERE
      "t0"."name" = 'order_paid'
      AND CASE
        WHEN JSON_TYPE(CAST("t0"."properties" AS JSON) -> '$.amount_fen') IN ('UBIGINT', 'BIGINT', 'DOUBLE')
        THEN CAST(CAST("t0"."properties" AS JSON) -> '$.amount_fen' AS DOUBLE)
        ELSE NULL
      END >= 10000.0
      AND "t0"."ts" >= MAKE_TIMESTAMPTZ(2025, 12, 31, 4, 0, 0.0, 'UTC')
      AND "t0"."ts" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
  ) AS "t1"
  GROUP BY
    1
) AS "t2"
WHERE
  "t2"."v" >= 2
