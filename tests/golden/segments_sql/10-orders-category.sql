-- orders sum amount_fen where category = "奶粉" >= 10000 in last 180d
SELECT DISTINCT
  "t2"."person_id"
FROM (
  SELECT
    "t1"."person_id",
    SUM(CAST("t1"."amount_fen" AS DOUBLE)) AS "v"
  FROM (
    SELECT
      *
    FROM "orders_current" AS "t0"
    WHERE
      "t0"."paid_at" IS NOT NULL
      AND NOT (
        "t0"."status" IN ('created', 'cancelled')
      )
      AND "t0"."paid_at" >= MAKE_TIMESTAMPTZ(2025, 10, 2, 4, 0, 0.0, 'UTC')
      AND "t0"."paid_at" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
      AND COALESCE(
        ARRAY_LENGTH(
          LIST_FILTER(
            "t0"."items",
            LAMBDA __ibis_param_item__ : COALESCE((
              __ibis_param_item__
            )."category" = '奶粉', FALSE)
          )
        ),
        0
      ) > 0
  ) AS "t1"
  GROUP BY
    1
) AS "t2"
WHERE
  "t2"."v" >= 10000.0
