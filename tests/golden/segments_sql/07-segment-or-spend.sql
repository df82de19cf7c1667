-- in segment "超级用户" or total_spend_fen >= 500000
WITH "t6" AS (
  SELECT
    *
  FROM "orders_current" AS "t2"
  WHERE
    "t2"."paid_at" IS NOT NULL
    AND NOT (
      "t2"."status" IN ('created', 'cancelled')
    )
)
SELECT DISTINCT
  *
FROM (
  SELECT
    *
  FROM (
    SELECT
      *
    FROM (
      SELECT
        "t8"."person_id"
      FROM (
        SELECT
          "t7"."person_id",
          SUM(CAST("t7"."amount_fen" AS DOUBLE)) AS "v"
        FROM "t6" AS "t7"
        GROUP BY
          1
      ) AS "t8"
      WHERE
        "t8"."v" >= 50000.0
    ) AS "t11"
    UNION
    SELECT
      *
    FROM (
      SELECT
        CAST("t0"."person_id" AS TEXT) AS "person_id"
      FROM "tag_state" AS "t0"
      WHERE
        "t0"."tag" IN ('高意向')
    ) AS "t3"
  ) AS "t12"
  UNION
  SELECT
    *
  FROM (
    SELECT
      "t13"."person_id"
    FROM (
      SELECT
        "t5"."person_id",
        COALESCE("t10"."v", 0.0) AS "v"
      FROM (
        SELECT
          CAST("t1"."person_id" AS TEXT) AS "person_id"
        FROM "person_state" AS "t1"
      ) AS "t5"
      LEFT OUTER JOIN (
        SELECT
          "t7"."person_id",
          CAST(SUM("t7"."amount_fen" - "t7"."refund_fen") AS DOUBLE) AS "v"
        FROM "t6" AS "t7"
        GROUP BY
          1
      ) AS "t10"
        ON "t5"."person_id" = "t10"."person_id"
    ) AS "t13"
    WHERE
      "t13"."v" >= 500000.0
  ) AS "t14"
) AS "t15"
