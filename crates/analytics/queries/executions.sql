-- A user's logged executions in [$2, $3), oldest first, at most $4.
-- Served by the primary key (user_id, executed_at, execution_id), which
-- also prunes partitions outside the range.
SELECT execution_id, user_id, operation_id, model, input_tokens, output_tokens,
       cost_micros, latency_ms, success, error_kind, executed_at
FROM opsdeck.operation_executions
WHERE user_id = $1 AND executed_at >= $2 AND executed_at < $3
ORDER BY executed_at, execution_id
LIMIT $4
