-- The query bench's dataset: 10 000 000 executions over the last 90 days in
-- ONE statement. Every tenth belongs to one "big" user (8 operations x 4
-- models, about 11 000 executions a day); the rest to 999 users with
-- 2 operations x 2 models each. Deterministic except for the execution ids.
-- The idempotency ledger is not filled: the bench only reads, and reads
-- never touch it.
INSERT INTO opsdeck.operation_executions
    (user_id, execution_id, operation_id, model, input_tokens, output_tokens,
     cost_micros, latency_ms, success, error_kind, executed_at)
SELECT
    CASE WHEN g % 10 = 0 THEN '00000000-0000-0000-0000-0000000000b1'::uuid
         ELSE md5('user' || (g % 999))::uuid END,
    gen_random_uuid(),
    CASE WHEN g % 10 = 0 THEN 'op' || ((g / 10) % 8) ELSE 'op' || (g % 2) END,
    (ARRAY['anthropic/claude-sonnet-4', 'anthropic/claude-haiku-4',
           'deepseek/deepseek-chat', 'openai/gpt-4o-mini'])
        [1 + CASE WHEN g % 10 = 0 THEN (g / 80) % 4 ELSE (g / 7) % 2 END],
    100 + g % 1900,
    20 + g % 500,
    200 + (g * 7) % 5000,
    -- Log-uniform between 1 ms and 16 s.
    (2 ^ (((g * 7919) % 1000) / 1000.0 * 14))::integer,
    g % 23 <> 0,
    CASE WHEN g % 23 = 0 THEN 'timeout' END,
    now() - (g % (90 * 86400)) * interval '1 second'
FROM generate_series(1::bigint, 10000000) AS g
