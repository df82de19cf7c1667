-- in group "宝妈交流群 1" and owner = "zhangsan"
SELECT DISTINCT
  *
FROM (
  SELECT
    "t4"."person_id"
  FROM (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "group_state" AS "t0"
    WHERE
      "t0"."chat_id" IN ('宝妈交流群 1', 'wrA1')
  ) AS "t4"
  SEMI JOIN (
    SELECT
      CAST("t1"."person_id" AS TEXT) AS "person_id"
    FROM "person_state" AS "t1"
    WHERE
      "t1"."owner" = 'zhangsan'
  ) AS "t5"
    ON "t4"."person_id" = "t5"."person_id"
) AS "t6"
