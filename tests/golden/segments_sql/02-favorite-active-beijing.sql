-- did favorite in last 30d and did any in last 7d and city = "北京" and gender = "女" and first_seen <= 365d ago
SELECT DISTINCT
  *
FROM (
  SELECT
    "t8"."person_id"
  FROM (
    SELECT
      "t0"."person_id"
    FROM "events_resolved" AS "t0"
    WHERE
      "t0"."name" = 'favorite'
      AND "t0"."ts" >= MAKE_TIMESTAMPTZ(2026, 3, 1, 4, 0, 0.0, 'UTC')
      AND "t0"."ts" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
  ) AS "t8"
  SEMI JOIN (
    SELECT
      "t0"."person_id"
    FROM "events_resolved" AS "t0"
    WHERE
      "t0"."message_type" <> 'change'
      AND "t0"."ts" >= MAKE_TIMESTAMPTZ(2026, 3, 24, 4, 0, 0.0, 'UTC')
      AND "t0"."ts" <= MAKE_TIMESTAMPTZ(2026, 3, 31, 4, 0, 0.0, 'UTC')
  ) AS "t9"
    ON "t8"."person_id" = "t9"."person_id"
  SEMI JOIN (
    SELECT
      CAST("t1"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t1"
    WHERE
      "t1"."key" = 'city' AND "t1"."value_str" = '北京'
  ) AS "t10"
    ON "t8"."person_id" = "t10"."person_id"
  SEMI JOIN (
    SELECT
      CAST("t1"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t1"
    WHERE
      "t1"."key" = 'gender' AND "t1"."value_str" = '女'
  ) AS "t11"
    ON "t8"."person_id" = "t11"."person_id"
  SEMI JOIN (
    SELECT
      CAST("t2"."person_id" AS TEXT) AS "person_id"
    FROM "person_state" AS "t2"
    WHERE
      "t2"."first_seen" <= MAKE_TIMESTAMPTZ(2025, 3, 31, 4, 0, 0.0, 'UTC')
  ) AS "t12"
    ON "t8"."person_id" = "t12"."person_id"
) AS "t13"
