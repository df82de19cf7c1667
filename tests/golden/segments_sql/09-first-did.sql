-- first did order_paid where amount_fen >= 10000 in last 30d
WITH "t1" AS (
  SELECT
    *
  FROM "events_resolved" AS "t0"
  WHERE
    "t0"."name" = 'order_paid'
)
SELECT DISTINCT
  "t6"."person_id"
FROM (
  SELECT
    "t3"."event_id",
    "t3"."person_id",
    "t3"."identity_set",
    "t3"."message_type",
    "t3"."name",
    "t3"."ts",
    "t3"."properties",
    "t3"."source",
    "t3"."received_at",
    "t5"."first_ts"
  FROM "t1" AS "t3"
  INNER JOIN (
    SELECT
      "t2"."person_id",
      MIN("t2"."ts") AS "first_ts"
    FROM "t1" AS "t2"
    GROUP BY
      1
  ) AS "t5"
    ON "t3"."person_id" = "t5"."person_id"
) AS "t6"
WHERE
  "t6"."ts" = "t6"."first_ts"
  AND CASE
    WHEN JSON_TYPE(CAST("t6"."properties" AS JSON) -> '$.amount_fen') IN ('UBIGINT', 'BIGINT', 'DOUBLE')
    THEN CAST(CAST("t6"."properties" AS JSON) -> '$.amount_fen' AS DOUBLE)
    ELSE NULL
  END >= 10000.0
  AND "t6"."ts" >= MAKE_TIMESTAMPTZ(2026, 3, 1, 4, 0, 0.0, 'UTC')
  AND "t6"."ts" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
