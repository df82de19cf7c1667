-- city = "北京" and gender = "女"
SELECT DISTINCT
  *
FROM (
  SELECT
    "t3"."person_id"
  FROM (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t0"
    WHERE
      "t0"."key" = 'city' AND "t0"."value_str" = '北京'
  ) AS "t3"
  SEMI JOIN (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t0"
    WHERE
      "t0"."key" = 'gender' AND "t0"."value_str" = '女'
  ) AS "t4"
    ON "t3"."person_id" = "t4"."person_id"
) AS "t5"
