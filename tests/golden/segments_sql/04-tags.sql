-- has tag "高意向" and not has tag "已流失"
SELECT DISTINCT
  *
FROM (
  SELECT
    "t3"."person_id"
  FROM (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "tag_state" AS "t0"
    WHERE
      "t0"."tag" IN ('高意向')
  ) AS "t3"
  ANTI JOIN (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "tag_state" AS "t0"
    WHERE
      "t0"."tag" IN ('已流失')
  ) AS "t4"
    ON "t3"."person_id" = "t4"."person_id"
) AS "t5"
