-- balance_fen is not set and nickname is set
SELECT DISTINCT
  *
FROM (
  SELECT
    "t5"."person_id"
  FROM (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "person_state" AS "t0"
  ) AS "t5"
  ANTI JOIN (
    SELECT
      CAST("t1"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t1"
    WHERE
      "t1"."key" = 'balance_fen'
  ) AS "t6"
    ON "t5"."person_id" = "t6"."person_id"
  SEMI JOIN (
    SELECT
      CAST("t1"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t1"
    WHERE
      "t1"."key" = 'nickname'
  ) AS "t7"
    ON "t5"."person_id" = "t7"."person_id"
) AS "t8"
