-- Execution analytics (opsdeck-analytics): the append-only execution log,
-- its idempotency ledger, daily rollups with latency histograms, SLA targets
-- and optimization recommendations.
--
-- Applies on any PostgreSQL 13+ without extensions (schema `opsdeck` comes
-- from 0001). Money is integer micro-dollars (bigint), never floating point;
-- rollup days are UTC dates.

-- ---------------------------------------------------------------------------
-- Latency histogram buckets: THE one definition SQL uses. The Rust constant
-- `opsdeck_analytics::LATENCY_BUCKET_BOUNDS` must be identical (a test
-- compares them). Element i is the inclusive lower bound, in milliseconds,
-- of bucket i; a bucket ends where the next begins, the last one is open.
-- Exact below 8 ms, then four buckets per power of two (each at most 25%
-- wide), up to 2^20 ms (about 17.5 minutes). A rollup's histogram is a
-- bigint[] of the same length, counts per bucket, so histograms of any days
-- merge by element-wise addition and percentiles never need raw rows.
CREATE FUNCTION opsdeck.latency_bucket_bounds() RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{0,1,2,3,4,5,6,7,8,10,12,14,16,20,24,28,32,40,48,56,64,80,96,112,
             128,160,192,224,256,320,384,448,512,640,768,896,1024,1280,1536,1792,
             2048,2560,3072,3584,4096,5120,6144,7168,8192,10240,12288,14336,
             16384,20480,24576,28672,32768,40960,49152,57344,65536,81920,98304,
             114688,131072,163840,196608,229376,262144,327680,393216,458752,
             524288,655360,786432,917504,1048576}'::integer[]
$$;

-- The histogram (bigint[], one count per bucket) of a set of latencies.
CREATE FUNCTION opsdeck.latency_histogram(p_latencies_ms integer[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(COALESCE(c.n, 0) ORDER BY b.i)
    FROM generate_series(1, cardinality(opsdeck.latency_bucket_bounds())) AS b(i)
    LEFT JOIN (
        SELECT width_bucket(l, opsdeck.latency_bucket_bounds()) AS i, count(*) AS n
        FROM unnest(p_latencies_ms) AS l
        GROUP BY 1
    ) AS c USING (i)
$$;

-- Element-wise sum of two histograms (how rollups merge).
CREATE FUNCTION opsdeck.latency_histogram_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array_agg(x + y ORDER BY i) FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

-- ---------------------------------------------------------------------------
-- The execution log: append-only, range-partitioned by month on executed_at
-- (UTC month bounds). A primary key of a partitioned table must contain the
-- partition key, so it cannot make execution_id unique on its own; the
-- ledger below does that. The key (user_id, executed_at, execution_id) is
-- also the index for period queries on raw rows.
CREATE TABLE opsdeck.operation_executions (
    user_id       uuid        NOT NULL,
    execution_id  uuid        NOT NULL,
    operation_id  text        NOT NULL,
    model         text        NOT NULL,
    input_tokens  bigint      NOT NULL,
    output_tokens bigint      NOT NULL,
    cost_micros   bigint      NOT NULL,
    latency_ms    integer     NOT NULL,
    success       boolean     NOT NULL,
    error_kind    text,
    executed_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operation_executions_pkey PRIMARY KEY (user_id, executed_at, execution_id),
    -- The format rules of operation_id and model are CHECKs of cost_trends
    -- instead: every logged row feeds a rollup row in the same statement, so
    -- they guard the log too, at the cost of one regex per rollup key rather
    -- than per execution (measured: per-row regexes made the log insert of a
    -- 10 000-row batch take 102 ms instead of 19 ms).
    CONSTRAINT operation_executions_input_tokens_check
        CHECK (input_tokens BETWEEN 0 AND 1000000000),
    CONSTRAINT operation_executions_output_tokens_check
        CHECK (output_tokens BETWEEN 0 AND 1000000000),
    -- At most 10 000 dollars per execution: keeps every sum far from overflow.
    CONSTRAINT operation_executions_cost_micros_check
        CHECK (cost_micros BETWEEN 0 AND 10000000000),
    -- At most 24 hours.
    CONSTRAINT operation_executions_latency_ms_check
        CHECK (latency_ms BETWEEN 0 AND 86400000),
    -- A failure always names its kind; a success never has one. (The kind's
    -- format, [a-z0-9_.-]{1,64}, is checked once per distinct value by
    -- record_operation_executions.)
    CONSTRAINT operation_executions_outcome_check
        CHECK (success = (error_kind IS NULL))
) PARTITION BY RANGE (executed_at);

COMMENT ON TABLE opsdeck.operation_executions IS
    'Append-only log of operation executions, partitioned by month (opsdeck-analytics).';

-- Catches rows of months without a partition, so recording never fails for
-- lack of one; create_execution_partitions moves them out.
CREATE TABLE opsdeck.operation_executions_default
    PARTITION OF opsdeck.operation_executions DEFAULT;

-- Append-only: rows are never changed (retention removes whole partitions).
CREATE FUNCTION opsdeck.refuse_execution_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'opsdeck.operation_executions is append-only'
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER operation_executions_append_only
    BEFORE UPDATE ON opsdeck.operation_executions
    FOR EACH STATEMENT EXECUTE FUNCTION opsdeck.refuse_execution_update();

-- The idempotency ledger: one row per recorded execution id, whatever its
-- executed_at. Recording inserts here first with ON CONFLICT DO NOTHING;
-- only ids that were inserted reach the log and the rollup, so a retry —
-- even one carrying a different timestamp — adds nothing. Not partitioned
-- (uniqueness must span months); prune_execution_ids trims it after
-- retention.
CREATE TABLE opsdeck.execution_ids (
    user_id      uuid        NOT NULL,
    execution_id uuid        NOT NULL,
    executed_at  timestamptz NOT NULL,
    CONSTRAINT execution_ids_pkey PRIMARY KEY (user_id, execution_id)
);

COMMENT ON TABLE opsdeck.execution_ids IS
    'Idempotency ledger of recorded execution ids (opsdeck-analytics).';

-- Executions older than the horizon are refused: their log partition and
-- ledger rows may be gone, so a replay could no longer be recognised and
-- would be counted twice in the rollups, which retention keeps.
CREATE TABLE opsdeck.execution_retention (
    singleton boolean     NOT NULL DEFAULT true,
    horizon   timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT execution_retention_pkey PRIMARY KEY (singleton),
    CONSTRAINT execution_retention_singleton_check CHECK (singleton)
);

INSERT INTO opsdeck.execution_retention DEFAULT VALUES;

-- ---------------------------------------------------------------------------
-- Daily rollups (the seed's cost_trends): one row per (user, operation,
-- model, UTC day, shard). `shard` (the writer's backend pid mod 8) spreads
-- one hot key over up to 8 rows so concurrent writers of the same key do not
-- queue on one row lock until each other's commit; readers sum the shards
-- (every query groups anyway). Measured with pgbench on 2 cores, 16 writers
-- of one key: 518 executions/s on one row (below the 880/s of one writer),
-- 2700/s with 8 shards.
CREATE TABLE opsdeck.cost_trends (
    user_id           uuid        NOT NULL,
    operation_id      text        NOT NULL,
    model             text        NOT NULL,
    day               date        NOT NULL,
    shard             smallint    NOT NULL DEFAULT 0,
    executions        bigint      NOT NULL,
    successes         bigint      NOT NULL,
    failures          bigint      NOT NULL,
    input_tokens      bigint      NOT NULL,
    output_tokens     bigint      NOT NULL,
    cost_micros       bigint      NOT NULL,
    latency_ms_sum    bigint      NOT NULL,
    latency_histogram bigint[]    NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cost_trends_pkey PRIMARY KEY (user_id, operation_id, model, day, shard),
    -- The same rules as opsdeck_core::OperationId / ModelRef.
    CONSTRAINT cost_trends_operation_id_check
        CHECK (operation_id ~ '^[a-z0-9_.-]{1,64}$'),
    CONSTRAINT cost_trends_model_check
        CHECK (model ~ '^[a-z0-9_-]{1,32}/[A-Za-z0-9._:/@-]{1,128}$'),
    CONSTRAINT cost_trends_shard_check CHECK (shard BETWEEN 0 AND 7),
    CONSTRAINT cost_trends_counts_check
        CHECK (successes >= 0 AND failures >= 0 AND executions = successes + failures),
    CONSTRAINT cost_trends_sums_check
        CHECK (input_tokens >= 0 AND output_tokens >= 0 AND cost_micros >= 0
               AND latency_ms_sum >= 0),
    CONSTRAINT cost_trends_histogram_check
        CHECK (array_length(latency_histogram, 1) = cardinality(opsdeck.latency_bucket_bounds())
               AND array_lower(latency_histogram, 1) = 1)
);

COMMENT ON TABLE opsdeck.cost_trends IS
    'Daily rollups of operation_executions per user, operation, model and UTC day (opsdeck-analytics).';

-- The seed's cost-trends index: a user's days in order, cost at hand.
CREATE INDEX cost_trends_user_day_cost_idx ON opsdeck.cost_trends (user_id, day, cost_micros);

-- ---------------------------------------------------------------------------
-- Recording. record_operation_executions writes a whole batch in one call:
--   1. dedupe the batch by (user_id, execution_id), first occurrence wins;
--   2. claim ids in the ledger in key order (ON CONFLICT DO NOTHING
--      RETURNING): only newly claimed ids go on;
--   3. append them to the log;
--   4. pre-aggregate them per rollup key and upsert the rollups in key order.
-- Every writer takes ledger and rollup row locks in ascending key order,
-- ledger first, so concurrent batches cannot deadlock. Validation failures
-- raise check_violation naming a constraint (the Rust error maps it) and
-- write nothing. Returns how many executions were new.
CREATE FUNCTION opsdeck.record_operation_executions(
    p_user_ids      uuid[],
    p_execution_ids uuid[],
    p_operation_ids text[],
    p_models        text[],
    p_input_tokens  bigint[],
    p_output_tokens bigint[],
    p_cost_micros   bigint[],
    p_latency_ms    integer[],
    p_success       boolean[],
    p_error_kinds   text[],
    p_executed_at   timestamptz[],
    p_max_future    interval DEFAULT interval '5 minutes'
) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_n        integer := COALESCE(cardinality(p_execution_ids), 0);
    v_range    record;
    v_horizon  timestamptz;
    v_recorded bigint;
    -- Concurrent sessions land on different shards of a hot rollup key.
    v_shard    smallint := (pg_backend_pid() % 8)::smallint;
BEGIN
    IF v_n = 0 THEN
        RETURN 0;
    END IF;
    -- Keep in step with opsdeck_analytics::MAX_BATCH.
    IF v_n > 10000 THEN
        RAISE EXCEPTION 'a batch of % executions exceeds the maximum of 10000', v_n
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'record_operation_executions_batch_size';
    END IF;
    IF COALESCE(cardinality(p_user_ids), 0) <> v_n
       OR COALESCE(cardinality(p_operation_ids), 0) <> v_n
       OR COALESCE(cardinality(p_models), 0) <> v_n
       OR COALESCE(cardinality(p_input_tokens), 0) <> v_n
       OR COALESCE(cardinality(p_output_tokens), 0) <> v_n
       OR COALESCE(cardinality(p_cost_micros), 0) <> v_n
       OR COALESCE(cardinality(p_latency_ms), 0) <> v_n
       OR COALESCE(cardinality(p_success), 0) <> v_n
       OR COALESCE(cardinality(p_error_kinds), 0) <> v_n
       OR COALESCE(cardinality(p_executed_at), 0) <> v_n THEN
        RAISE EXCEPTION 'record_operation_executions: all arrays must have % elements', v_n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- One pass over the numbers so that a bad value is reported under the
    -- log's own constraint name (the rollup's sum check could fire first).
    SELECT min(t.at) AS earliest, max(t.at) AS latest,
           min(t.input_tokens) AS min_input, max(t.input_tokens) AS max_input,
           min(t.output_tokens) AS min_output, max(t.output_tokens) AS max_output,
           min(t.cost_micros) AS min_cost, max(t.cost_micros) AS max_cost,
           min(t.latency_ms) AS min_latency, max(t.latency_ms) AS max_latency
    INTO v_range
    FROM unnest(p_executed_at, p_input_tokens, p_output_tokens, p_cost_micros, p_latency_ms)
        AS t(at, input_tokens, output_tokens, cost_micros, latency_ms);
    IF v_range.min_input < 0 OR v_range.max_input > 1000000000 THEN
        RAISE EXCEPTION 'input_tokens must be between 0 and 1000000000'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'operation_executions_input_tokens_check';
    END IF;
    IF v_range.min_output < 0 OR v_range.max_output > 1000000000 THEN
        RAISE EXCEPTION 'output_tokens must be between 0 and 1000000000'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'operation_executions_output_tokens_check';
    END IF;
    IF v_range.min_cost < 0 OR v_range.max_cost > 10000000000 THEN
        RAISE EXCEPTION 'cost_micros must be between 0 and 10000000000'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'operation_executions_cost_micros_check';
    END IF;
    IF v_range.min_latency < 0 OR v_range.max_latency > 86400000 THEN
        RAISE EXCEPTION 'latency_ms must be between 0 and 86400000'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'operation_executions_latency_ms_check';
    END IF;
    IF v_range.latest > now() + p_max_future THEN
        RAISE EXCEPTION 'executed_at % is more than % in the future', v_range.latest, p_max_future
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'operation_executions_executed_at_future_check';
    END IF;
    IF EXISTS (SELECT FROM (SELECT DISTINCT e FROM unnest(p_error_kinds) AS e) AS kinds
               WHERE kinds.e !~ '^[a-z0-9_.-]{1,64}$') THEN
        RAISE EXCEPTION 'error kinds must be 1-64 characters of [a-z0-9_.-]'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'operation_executions_error_kind_check';
    END IF;
    SELECT r.horizon INTO v_horizon FROM opsdeck.execution_retention AS r;
    IF v_range.earliest < v_horizon THEN
        RAISE EXCEPTION 'executed_at % is before the retention horizon %', v_range.earliest, v_horizon
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'operation_executions_executed_at_retention_check';
    END IF;

    WITH input AS (
        SELECT DISTINCT ON (i.user_id, i.execution_id) i.*
        FROM unnest(p_user_ids, p_execution_ids, p_operation_ids, p_models, p_input_tokens,
                    p_output_tokens, p_cost_micros, p_latency_ms, p_success, p_error_kinds,
                    p_executed_at) WITH ORDINALITY
            AS i(user_id, execution_id, operation_id, model, input_tokens, output_tokens,
                 cost_micros, latency_ms, success, error_kind, executed_at, position)
        ORDER BY i.user_id, i.execution_id, i.position
    ),
    claimed AS (
        INSERT INTO opsdeck.execution_ids (user_id, execution_id, executed_at)
        SELECT i.user_id, i.execution_id, i.executed_at
        FROM input AS i
        ORDER BY i.user_id, i.execution_id
        ON CONFLICT (user_id, execution_id) DO NOTHING
        RETURNING user_id, execution_id
    ),
    fresh AS (
        SELECT i.*
        FROM input AS i
        JOIN claimed AS c ON c.user_id = i.user_id AND c.execution_id = i.execution_id
    ),
    logged AS (
        INSERT INTO opsdeck.operation_executions
            (user_id, execution_id, operation_id, model, input_tokens, output_tokens,
             cost_micros, latency_ms, success, error_kind, executed_at)
        SELECT f.user_id, f.execution_id, f.operation_id, f.model, f.input_tokens,
               f.output_tokens, f.cost_micros, f.latency_ms, f.success, f.error_kind,
               f.executed_at
        FROM fresh AS f
    ),
    rolled AS (
        INSERT INTO opsdeck.cost_trends AS r
            (user_id, operation_id, model, day, shard, executions, successes, failures,
             input_tokens, output_tokens, cost_micros, latency_ms_sum, latency_histogram)
        SELECT f.user_id, f.operation_id, f.model, (f.executed_at AT TIME ZONE 'UTC')::date,
               v_shard,
               count(*), count(*) FILTER (WHERE f.success), count(*) FILTER (WHERE NOT f.success),
               sum(f.input_tokens)::bigint, sum(f.output_tokens)::bigint,
               sum(f.cost_micros)::bigint, sum(f.latency_ms)::bigint,
               opsdeck.latency_histogram(array_agg(f.latency_ms))
        FROM fresh AS f
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (user_id, operation_id, model, day, shard) DO UPDATE
        SET executions        = r.executions + EXCLUDED.executions,
            successes         = r.successes + EXCLUDED.successes,
            failures          = r.failures + EXCLUDED.failures,
            input_tokens      = r.input_tokens + EXCLUDED.input_tokens,
            output_tokens     = r.output_tokens + EXCLUDED.output_tokens,
            cost_micros       = r.cost_micros + EXCLUDED.cost_micros,
            latency_ms_sum    = r.latency_ms_sum + EXCLUDED.latency_ms_sum,
            latency_histogram = opsdeck.latency_histogram_add(r.latency_histogram,
                                                              EXCLUDED.latency_histogram),
            updated_at        = now()
    )
    SELECT count(*) INTO v_recorded FROM fresh;
    RETURN v_recorded;
END
$fn$;

-- The seed's RPC: one execution, log + rollup in one round trip, idempotent
-- by execution id. Returns true if it was new, false for a replay.
CREATE FUNCTION opsdeck.record_operation_execution(
    p_user_id      uuid,
    p_execution_id uuid,
    p_operation_id text,
    p_model        text,
    p_input_tokens bigint,
    p_output_tokens bigint,
    p_cost_micros  bigint,
    p_latency_ms   integer,
    p_success      boolean,
    p_error_kind   text,
    p_executed_at  timestamptz,
    p_max_future   interval DEFAULT interval '5 minutes'
) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    -- One code path for single and batch recording: the same dedupe, lock
    -- order and rollup arithmetic.
    RETURN opsdeck.record_operation_executions(
        ARRAY[p_user_id], ARRAY[p_execution_id], ARRAY[p_operation_id], ARRAY[p_model],
        ARRAY[p_input_tokens], ARRAY[p_output_tokens], ARRAY[p_cost_micros],
        ARRAY[p_latency_ms], ARRAY[p_success], ARRAY[p_error_kind], ARRAY[p_executed_at],
        p_max_future) = 1;
END
$fn$;

-- ---------------------------------------------------------------------------
-- Partition maintenance.

-- Creates the monthly partitions of p_months months starting with the month
-- of p_from (UTC), skipping existing ones; returns the names it created.
-- Rows of such a month already in the default partition are moved into the
-- new partition. Takes a brief ACCESS EXCLUSIVE lock on the log when (and
-- only when) it creates something, parent before default partition, the
-- order recording uses, so it cannot deadlock with writers. Run it ahead of
-- time (e.g. monthly for the next three months).
CREATE FUNCTION opsdeck.create_execution_partitions(p_from date, p_months integer DEFAULT 3)
RETURNS SETOF text
LANGUAGE plpgsql AS $fn$
DECLARE
    v_first  date := date_trunc('month', p_from)::date;
    v_month  date;
    v_lower  timestamptz;
    v_upper  timestamptz;
    v_name   text;
    v_locked boolean := false;
BEGIN
    IF p_months IS NULL OR p_months < 1 OR p_months > 120 THEN
        RAISE EXCEPTION 'p_months must be between 1 and 120, got %', p_months
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 0 .. p_months - 1 LOOP
        v_month := (v_first + make_interval(months => i))::date;
        v_name := 'operation_executions_p' || to_char(v_month, 'YYYY_MM');
        CONTINUE WHEN to_regclass(format('opsdeck.%I', v_name)) IS NOT NULL;
        IF NOT v_locked THEN
            LOCK TABLE opsdeck.operation_executions IN ACCESS EXCLUSIVE MODE;
            v_locked := true;
        END IF;
        v_lower := v_month::timestamp AT TIME ZONE 'UTC';
        v_upper := (v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (SELECT FROM opsdeck.operation_executions_default
                   WHERE executed_at >= v_lower AND executed_at < v_upper) THEN
            EXECUTE format('CREATE TABLE opsdeck.%I (LIKE opsdeck.operation_executions
                                INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
            EXECUTE format('WITH moved AS (
                                DELETE FROM opsdeck.operation_executions_default
                                WHERE executed_at >= $1 AND executed_at < $2
                                RETURNING *)
                            INSERT INTO opsdeck.%I SELECT * FROM moved', v_name)
                USING v_lower, v_upper;
            EXECUTE format('ALTER TABLE opsdeck.operation_executions ATTACH PARTITION opsdeck.%I
                                FOR VALUES FROM (%L) TO (%L)', v_name, v_lower, v_upper);
        ELSE
            EXECUTE format('CREATE TABLE opsdeck.%I PARTITION OF opsdeck.operation_executions
                                FOR VALUES FROM (%L) TO (%L)', v_name, v_lower, v_upper);
        END IF;
        RETURN NEXT v_name;
    END LOOP;
END
$fn$;

-- Retention: detaches (and, unless p_detach_only, drops) every monthly
-- partition that ends on or before the start of p_before's UTC month,
-- deletes older rows from the default partition and moves the retention
-- horizon there, so older executions are refused from now on. Rollups stay.
-- Returns the partitions it detached. Holds an ACCESS EXCLUSIVE lock on the
-- log while it runs (milliseconds: no rows are scanned but the default
-- partition's). Call prune_execution_ids afterwards to trim the ledger.
CREATE FUNCTION opsdeck.drop_execution_partitions(
    p_before      timestamptz,
    p_detach_only boolean DEFAULT false
) RETURNS SETOF text
LANGUAGE plpgsql AS $fn$
DECLARE
    v_cutoff timestamptz := date_trunc('month', p_before AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_part   record;
BEGIN
    IF p_before IS NULL OR p_before > now() THEN
        RAISE EXCEPTION 'p_before must be a time in the past, got %', p_before
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE opsdeck.operation_executions IN ACCESS EXCLUSIVE MODE;
    FOR v_part IN
        SELECT c.oid::regclass AS relation, c.relname AS name
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'opsdeck.operation_executions'::regclass
          -- Range bounds print as FOR VALUES FROM ('…') TO ('…'), with the
          -- offset, so the text casts back to the exact instant.
          AND substring(pg_get_expr(c.relpartbound, c.oid) FROM $re$TO \('([^']+)'\)$re$)::timestamptz
              <= v_cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE opsdeck.operation_executions DETACH PARTITION %s',
                       v_part.relation);
        IF NOT p_detach_only THEN
            EXECUTE format('DROP TABLE %s', v_part.relation);
        END IF;
        RETURN NEXT v_part.name;
    END LOOP;
    DELETE FROM opsdeck.operation_executions_default WHERE executed_at < v_cutoff;
    UPDATE opsdeck.execution_retention SET horizon = greatest(horizon, v_cutoff);
END
$fn$;

-- Deletes ledger rows older than the retention horizon (recording refuses
-- those times, so their ids can no longer come back). A sequential scan of
-- the ledger: run it off-peak, after drop_execution_partitions. Returns the
-- number of rows deleted.
CREATE FUNCTION opsdeck.prune_execution_ids() RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM opsdeck.execution_ids
        WHERE executed_at < (SELECT horizon FROM opsdeck.execution_retention)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

-- The previous month (late arrivals), this month and the next two.
SELECT opsdeck.create_execution_partitions(
    ((now() AT TIME ZONE 'UTC')::date - interval '1 month')::date, 4);

-- ---------------------------------------------------------------------------
-- SLA targets per user and operation. Success rate in parts per million
-- (999000 = 99.9%) so comparisons stay exact integers.
CREATE TABLE opsdeck.sla_targets (
    user_id              uuid        NOT NULL,
    operation_id         text        NOT NULL,
    min_success_rate_ppm integer     NOT NULL,
    max_p95_latency_ms   integer     NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sla_targets_pkey PRIMARY KEY (user_id, operation_id),
    CONSTRAINT sla_targets_operation_id_check CHECK (operation_id ~ '^[a-z0-9_.-]{1,64}$'),
    CONSTRAINT sla_targets_min_success_rate_ppm_check
        CHECK (min_success_rate_ppm BETWEEN 0 AND 1000000),
    CONSTRAINT sla_targets_max_p95_latency_ms_check
        CHECK (max_p95_latency_ms BETWEEN 1 AND 86400000)
);

COMMENT ON TABLE opsdeck.sla_targets IS
    'Per-user, per-operation SLA targets (opsdeck-analytics).';

-- ---------------------------------------------------------------------------
-- Optimization recommendations. `subject` names what a recommendation is
-- about (an operation, or an operation and a model); at most one active
-- recommendation exists per (user, kind, subject), which is what makes
-- generation idempotent (INSERT … ON CONFLICT on the partial unique index).
CREATE TABLE opsdeck.optimization_recommendations (
    user_id           uuid        NOT NULL,
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    kind              text        NOT NULL,
    subject           text        NOT NULL,
    operation_id      text        NOT NULL,
    model             text,
    details           jsonb       NOT NULL,
    status            text        NOT NULL DEFAULT 'active',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    status_changed_at timestamptz,
    CONSTRAINT optimization_recommendations_pkey PRIMARY KEY (user_id, id),
    CONSTRAINT optimization_recommendations_kind_check
        CHECK (kind IN ('cheaper_model', 'cost_rising', 'failing_model')),
    CONSTRAINT optimization_recommendations_status_check
        CHECK (status IN ('active', 'dismissed', 'applied')),
    CONSTRAINT optimization_recommendations_status_changed_check
        CHECK ((status = 'active') = (status_changed_at IS NULL)),
    CONSTRAINT optimization_recommendations_operation_id_check
        CHECK (operation_id ~ '^[a-z0-9_.-]{1,64}$'),
    CONSTRAINT optimization_recommendations_details_check
        CHECK (jsonb_typeof(details) = 'object')
);

COMMENT ON TABLE opsdeck.optimization_recommendations IS
    'Optimization recommendations generated from the rollups (opsdeck-analytics).';

-- The seed's partial index on active recommendations, also the arbiter of
-- idempotent generation.
CREATE UNIQUE INDEX optimization_recommendations_active_key
    ON opsdeck.optimization_recommendations (user_id, kind, subject)
    WHERE status = 'active';
