-- The rollups of the generated log in ONE statement: the same sums and
-- histogram function record_operation_executions uses, one shard per key.
INSERT INTO opsdeck.cost_trends
    (user_id, operation_id, model, day, shard, executions, successes, failures,
     input_tokens, output_tokens, cost_micros, latency_ms_sum, latency_histogram)
SELECT user_id, operation_id, model, (executed_at AT TIME ZONE 'UTC')::date, 0,
       count(*), count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success),
       sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cost_micros)::bigint,
       sum(latency_ms)::bigint, opsdeck.latency_histogram(array_agg(latency_ms))
FROM opsdeck.operation_executions
GROUP BY 1, 2, 3, 4
