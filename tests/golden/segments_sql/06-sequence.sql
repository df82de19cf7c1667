-- did add_contact then order_paid within 7d in last 60d
SELECT DISTINCT
  "t6"."person_id"
FROM (
  SELECT
    "t5"."person_id",
    "t5"."start_ts",
    "t5"."limit_ts",
    MIN("t5"."next_ts") AS "last_ts"
  FROM (
    SELECT
      "t3"."person_id",
      "t3"."start_ts",
      "t3"."last_ts",
      "t3"."limit_ts",
      "t4"."next_person",
      "t4"."next_ts"
    FROM (
      SELECT DISTINCT
        "t0"."person_id",
        "t0"."ts" AS "start_ts",
        "t0"."ts" AS "last_ts",
        "t0"."ts" + INTERVAL '168' HOUR AS "limit_ts"
      FROM "events_resolved" AS "t0"
      WHERE
        "t0"."name" = 'add_contact'
        AND "t0"."ts" >= MAKE_TIMESTAMPTZ(2026, 1, 30, 4, 0, 0.0, 'UTC')
        AND "t0"."ts" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
    ) AS "t3"
    INNER JOIN (
      SELECT
        "t0"."person_id" AS "next_person",
        "t0"."ts" AS "next_ts"
      FROM "events_resolved" AS "t0"
      WHERE
        "t0"."name" = 'order_paid'
        AND "t0"."ts" >= MAKE_TIMESTAMPTZ(2026, 1, 30, 4, 0, 0.0, 'UTC')
        AND "t0"."ts" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
    ) AS "t4"
      ON "t3"."person_id" = "t4"."next_person"
      AND "t4"."next_ts" > "t3"."last_ts"
      AND "t4"."next_ts" <= "t3"."limit_ts"
  ) AS "t5"
  GROUP BY
    1,
    2,
    3
) AS "t6"
