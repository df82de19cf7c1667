-- age between 18 and 30 and vip = true and score >= 4.5 and interests contains "烘焙"
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
      "t0"."key" = 'age' AND "t0"."value_num" BETWEEN 18.0 AND 30.0
  ) AS "t3"
  SEMI JOIN (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t0"
    WHERE
      "t0"."key" = 'vip'
      AND CASE
        WHEN JSON_TYPE(CAST("t0"."value" AS JSON)) = 'BOOLEAN'
        THEN CAST(CAST("t0"."value" AS JSON) AS BOOLEAN)
        ELSE NULL
      END = TRUE
  ) AS "t6"
    ON "t3"."person_id" = "t6"."person_id"
  SEMI JOIN (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t0"
    WHERE
      "t0"."key" = 'score' AND "t0"."value_num" >= 4.5
  ) AS "t4"
    ON "t3"."person_id" = "t4"."person_id"
  SEMI JOIN (
    SELECT
      CAST("t0"."person_id" AS TEXT) AS "person_id"
    FROM "trait_state" AS "t0"
    WHERE
      "t0"."key" = 'interests'
      AND ARRAY_CONTAINS(
        LIST_APPLY(
          CASE
            WHEN JSON_TYPE(CAST("t0"."value" AS JSON)) = 'ARRAY'
            THEN CAST(CAST(CAST("t0"."value" AS JSON) AS JSON) AS JSON[])
            ELSE NULL
          END,
          LAMBDA __ibis_param_x__ : CASE
            WHEN JSON_TYPE(__ibis_param_x__) = 'VARCHAR'
            THEN __ibis_param_x__ ->> '$'
            ELSE NULL
          END
        ),
        '烘焙'
      )
  ) AS "t8"
    ON "t3"."person_id" = "t8"."person_id"
) AS "t9"
