-- has all tags in ("高意向", "复购") or has no tag in ("羊毛党")
SELECT DISTINCT
  *
FROM (
  SELECT
    *
  FROM (
    SELECT
      CAST("t7"."person_id" AS TEXT) AS "person_id"
    FROM (
      SELECT
        "t2"."person_id",
        COUNT(DISTINCT "t2"."tag") AS "n"
      FROM (
        SELECT
          *
        FROM "tag_state" AS "t0"
        WHERE
          "t0"."tag" IN ('高意向', '复购')
      ) AS "t2"
      GROUP BY
        1
    ) AS "t7"
    WHERE
      "t7"."n" = 2
  ) AS "t9"
  UNION
  SELECT
    *
  FROM (
    SELECT
      "t6"."person_id"
    FROM (
      SELECT
        CAST("t1"."person_id" AS TEXT) AS "person_id"
      FROM "person_state" AS "t1"
    ) AS "t6"
    ANTI JOIN (
      SELECT
        CAST("t0"."person_id" AS TEXT) AS "person_id"
      FROM "tag_state" AS "t0"
      WHERE
        "t0"."tag" IN ('羊毛党')
    ) AS "t5"
      ON "t6"."person_id" = "t5"."person_id"
  ) AS "t8"
) AS "t10"
