-- orders aov >= 20000
SELECT DISTINCT
  "t2"."person_id"
FROM (
  SELECT
    "t1"."person_id",
    AVG(CAST("t1"."amount_fen" AS DOUBLE)) AS "v"
  FROM (
    SELECT
      *
    FROM "orders_current" AS "t0"
    WHERE
      "t0"."paid_at" IS NOT NULL
      AND NOT (
        "t0"."status" IN ('created', 'cancelled')
      )
  ) AS "t1"
  GROUP BY
    1
) AS "t2"
WHERE
  "t2"."v" >= 20000.0
