-- A user's rollup rows in the day range [$2, $3), optionally of one
-- operation ($4) and/or model ($5). Shards of one (operation, model, day)
-- come out adjacent; the repository merges them. Never touches the log:
-- reports are built from these rows only.
SELECT operation_id, model, day, executions, successes, failures, input_tokens,
       output_tokens, cost_micros, latency_ms_sum, latency_histogram
FROM opsdeck.cost_trends
WHERE user_id = $1
  AND day >= $2 AND day < $3
  AND ($4::text IS NULL OR operation_id = $4)
  AND ($5::text IS NULL OR model = $5)
ORDER BY operation_id, model, day, shard
