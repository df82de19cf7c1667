-- did order_paid < 2 in last 90d
WITH "t5" AS (
  SELECT
    "t3"."person_id",
    COUNT(*) AS "v"
  FROM (
    SELECT
      *
    FROM "events_resolved" AS "t1"
    WHERE
      "t1"."name" = 'order_paid'
      AND "t1"."ts" >= MAKE_TIMESTAMPTZ(2025, 12, 31, 4, 0, 0.0, 'UTC')
      AND "t1"."ts" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
  ) AS "t3"
  GROUP BY
    1
)
SELECT DISTINCT
  *
FROM (
  SELECT
    *
  FROM (
    SELECT
      "t6"."person_id"
    FROM "t5" AS "t6"
    WHERE
      "t6"."v" < 2
  ) AS "t8"
  UNION
  SELECT
    *
  FROM (
    SELECT
      "t4"."person_id"
    FROM (
      SELECT
        CAST("t0"."person_id" AS TEXT) AS "person_id"
      FROM "person_state" AS "t0"
    ) AS "t4"
    ANTI JOIN "t5" AS "t7"
      ON "t4"."person_id" = "t7"."person_id"
  ) AS "t9"
) AS "t10"
