-- not did any in last 30d and did order_paid ever
SELECT DISTINCT
  *
FROM (
  SELECT
    "t3"."person_id"
  FROM (
    SELECT
      "t0"."person_id"
    FROM "events_resolved" AS "t0"
    WHERE
      "t0"."name" = 'order_paid'
  ) AS "t3"
  ANTI JOIN (
    SELECT
      "t0"."person_id"
    FROM "events_resolved" AS "t0"
    WHERE
      "t0"."message_type" <> 'change'
      AND "t0"."ts" >= MAKE_TIMESTAMPTZ(2026, 3, 1, 4, 0, 0.0, 'UTC')
      AND "t0"."ts" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
  ) AS "t4"
    ON "t3"."person_id" = "t4"."person_id"
) AS "t5"
