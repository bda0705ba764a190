-- A user's cost trend: rollups of [$2, $3) summed per bucket ($4 = day,
-- week or month; date_trunc weeks start on Monday), optionally of one
-- operation ($5) and/or model ($6). Uses the seed's (user_id, day,
-- cost_micros) index. Empty buckets are filled in by the repository.
SELECT date_trunc($4, day::timestamp)::date AS start,
       sum(executions)::bigint     AS executions,
       sum(successes)::bigint      AS successes,
       sum(failures)::bigint       AS failures,
       sum(input_tokens)::bigint   AS input_tokens,
       sum(output_tokens)::bigint  AS output_tokens,
       sum(cost_micros)::bigint    AS cost_micros,
       sum(latency_ms_sum)::bigint AS latency_ms_sum
FROM opsdeck.cost_trends
WHERE user_id = $1
  AND day >= $2 AND day < $3
  AND ($5::text IS NULL OR operation_id = $5)
  AND ($6::text IS NULL OR model = $6)
GROUP BY 1
ORDER BY 1
