-- birthday < "2000-01-01" and last_seen between 60d ago and 30d ago
SELECT DISTINCT
  *
FROM (
  SELECT
    "t5"."person_id"
  FROM (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t0"
    WHERE
      "t0"."key" = 'birthday'
      AND TRY_CAST(CASE
        WHEN REGEXP_MATCHES(
          CASE
            WHEN JSON_TYPE(CAST("t0"."value" AS JSON)) = 'VARCHAR'
            THEN CAST("t0"."value" AS JSON) ->> '$'
            ELSE NULL
          END,
          '^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$'
        )
        THEN CASE
          WHEN JSON_TYPE(CAST("t0"."value" AS JSON)) = 'VARCHAR'
          THEN CAST("t0"."value" AS JSON) ->> '$'
          ELSE NULL
        END
        ELSE CAST(NULL AS TEXT)
      END AS TIMESTAMPTZ) < MAKE_TIMESTAMPTZ(2000, 1, 1, 0, 0, 0.0, 'Asia/Shanghai')
  ) AS "t5"
  SEMI JOIN (
    SELECT
      CAST("t1"."person_id" AS TEXT) AS "person_id"
    FROM "person_state" AS "t1"
    WHERE
      "t1"."last_seen" >= MAKE_TIMESTAMPTZ(2026, 1, 30, 4, 0, 0.0, 'UTC')
      AND "t1"."last_seen" <= MAKE_TIMESTAMPTZ(2026, 3, 1, 4, 0, 0.0, 'UTC')
  ) AS "t3"
    ON "t5"."person_id" = "t3"."person_id"
) AS "t6"
