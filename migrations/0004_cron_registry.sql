-- The cron registry (opsdeck-cron-registry): named scheduled jobs per user
-- and operation, run by pg_cron when it is installed or by the in-process
-- runner otherwise.
--
-- Applies with or without pg_cron: nothing here is resolved against the
-- `cron` schema when it is created. pg_cron lives in `cron.database_name`,
-- usually another database; the Rust registry talks to it over a second
-- connection. The one function that may touch `cron.*`
-- (prune_cron_history) is plpgsql with dynamic SQL, resolved at call time.

-- One row per (user, job name): names are unique per user, so two users'
-- "nightly" jobs never clash (pg_cron's own name is derived from `id`).
CREATE TABLE opsdeck.cron_job_registry (
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    user_id        uuid        NOT NULL,
    job_name       text        NOT NULL,
    operation_id   text        NOT NULL,
    schedule       text        NOT NULL,
    command_kind   text        NOT NULL,
    command_args   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    active         boolean     NOT NULL DEFAULT true,
    -- Who fires the job: 'pg_cron' (pg_cron_job_id names the job there) or
    -- 'runner' (the in-process runner; pg_cron_job_id is NULL).
    scheduler      text        NOT NULL DEFAULT 'runner',
    pg_cron_job_id bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cron_job_registry_pkey PRIMARY KEY (user_id, job_name),
    CONSTRAINT cron_job_registry_id_key UNIQUE (id),
    -- The same rules as the Rust types (JobName, OperationId, CronSchedule,
    -- JobCommand), so rows written by other clients stay readable.
    CONSTRAINT cron_job_registry_job_name_check
        CHECK (job_name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    CONSTRAINT cron_job_registry_operation_id_check
        CHECK (operation_id ~ '^[a-z0-9_.-]{1,64}$'),
    CONSTRAINT cron_job_registry_schedule_check
        CHECK (length(schedule) BETWEEN 1 AND 120),
    CONSTRAINT cron_job_registry_command_kind_check
        CHECK (command_kind IN ('run_operation', 'refresh_recommendations', 'prune_history', 'call_function')),
    CONSTRAINT cron_job_registry_command_args_check
        CHECK (jsonb_typeof(command_args) = 'object'),
    CONSTRAINT cron_job_registry_scheduler_check
        CHECK (scheduler IN ('pg_cron', 'runner')),
    CONSTRAINT cron_job_registry_pg_cron_job_id_check
        CHECK (scheduler = 'pg_cron' OR pg_cron_job_id IS NULL)
);

-- User lookups use the primary key (user_id leads); this one serves
-- "jobs of a user for an operation", already in name order.
CREATE INDEX cron_job_registry_user_operation_idx
    ON opsdeck.cron_job_registry (user_id, operation_id, job_name);

-- What the in-process runner scans on every tick.
CREATE INDEX cron_job_registry_runner_idx
    ON opsdeck.cron_job_registry (id)
    WHERE active AND scheduler = 'runner';

COMMENT ON TABLE opsdeck.cron_job_registry IS
    'Named scheduled jobs per user and operation (opsdeck-cron-registry).';

-- Run history of the in-process runner (pg_cron keeps its own in
-- cron.job_run_details). The primary key is also the claim: a runner owns
-- the run of (job, scheduled minute) only if its INSERT created the row, so
-- several runners never run one tick twice.
CREATE TABLE opsdeck.cron_job_runs (
    run_id        bigint      GENERATED ALWAYS AS IDENTITY,
    user_id       uuid        NOT NULL,
    job_id        bigint      NOT NULL,
    scheduled_for timestamptz NOT NULL,
    runner        text        NOT NULL,
    status        text        NOT NULL DEFAULT 'running',
    message       text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    CONSTRAINT cron_job_runs_pkey PRIMARY KEY (user_id, job_id, scheduled_for),
    CONSTRAINT cron_job_runs_run_id_key UNIQUE (run_id),
    CONSTRAINT cron_job_runs_job_id_fkey FOREIGN KEY (job_id)
        REFERENCES opsdeck.cron_job_registry (id) ON DELETE CASCADE,
    CONSTRAINT cron_job_runs_status_check
        CHECK (status IN ('running', 'succeeded', 'failed'))
);

-- The cascade from the registry and retention by age.
CREATE INDEX cron_job_runs_job_id_idx ON opsdeck.cron_job_runs (job_id);
CREATE INDEX cron_job_runs_started_at_idx ON opsdeck.cron_job_runs (started_at);

COMMENT ON TABLE opsdeck.cron_job_runs IS
    'Runs fired by the opsdeck in-process cron runner (one row per job and slot).';

-- Work that fired jobs hand to the application: running an operation or
-- refreshing recommendations happens in Rust, not in SQL. Taken (and
-- deleted) by CronRegistry::take_requests.
CREATE TABLE opsdeck.cron_job_requests (
    request_id   bigint      GENERATED ALWAYS AS IDENTITY,
    user_id      uuid        NOT NULL,
    job_name     text        NOT NULL,
    kind         text        NOT NULL,
    operation_id text        NOT NULL,
    arguments    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    requested_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cron_job_requests_pkey PRIMARY KEY (user_id, request_id),
    CONSTRAINT cron_job_requests_request_id_key UNIQUE (request_id),
    CONSTRAINT cron_job_requests_kind_check
        CHECK (kind IN ('run_operation', 'refresh_recommendations')),
    CONSTRAINT cron_job_requests_operation_id_check
        CHECK (operation_id ~ '^[a-z0-9_.-]{1,64}$'),
    CONSTRAINT cron_job_requests_job_name_check
        CHECK (job_name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    CONSTRAINT cron_job_requests_arguments_check
        CHECK (jsonb_typeof(arguments) = 'object')
);

COMMENT ON TABLE opsdeck.cron_job_requests IS
    'Requests queued by fired cron jobs for the application to carry out.';

-- Idempotent upsert by (user, name): registering the same job twice leaves
-- one row; updated_at moves only when something changed.
CREATE FUNCTION opsdeck.register_cron_job(
    p_user_id      uuid,
    p_job_name     text,
    p_operation_id text,
    p_schedule     text,
    p_command_kind text,
    p_command_args jsonb DEFAULT '{}'::jsonb,
    p_active       boolean DEFAULT true,
    p_scheduler    text DEFAULT 'runner'
) RETURNS opsdeck.cron_job_registry
LANGUAGE sql
AS $$
    INSERT INTO opsdeck.cron_job_registry AS r
        (user_id, job_name, operation_id, schedule, command_kind, command_args, active, scheduler)
    VALUES (p_user_id, p_job_name, p_operation_id, p_schedule, p_command_kind,
            COALESCE(p_command_args, '{}'::jsonb), COALESCE(p_active, true),
            COALESCE(p_scheduler, 'runner'))
    ON CONFLICT (user_id, job_name) DO UPDATE
    SET operation_id   = EXCLUDED.operation_id,
        schedule       = EXCLUDED.schedule,
        command_kind   = EXCLUDED.command_kind,
        command_args   = EXCLUDED.command_args,
        active         = EXCLUDED.active,
        scheduler      = EXCLUDED.scheduler,
        -- A job moving to the runner no longer names a pg_cron job.
        pg_cron_job_id = CASE WHEN EXCLUDED.scheduler = 'pg_cron' THEN r.pg_cron_job_id END,
        updated_at     = CASE
            WHEN (r.operation_id, r.schedule, r.command_kind, r.command_args, r.active, r.scheduler)
                 IS DISTINCT FROM
                 (EXCLUDED.operation_id, EXCLUDED.schedule, EXCLUDED.command_kind,
                  EXCLUDED.command_args, EXCLUDED.active, EXCLUDED.scheduler)
            THEN now()
            ELSE r.updated_at
        END
    RETURNING r.*;
$$;

-- true if the user's job existed (and is now gone); false, never an
-- error, if there was none.
CREATE FUNCTION opsdeck.unregister_cron_job(p_user_id uuid, p_job_name text)
RETURNS boolean
LANGUAGE sql
AS $$
    WITH deleted AS (
        DELETE FROM opsdeck.cron_job_registry
        WHERE user_id = p_user_id AND job_name = p_job_name
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM deleted);
$$;

CREATE FUNCTION opsdeck.check_cron_job_exists(p_user_id uuid, p_job_name text)
RETURNS boolean
LANGUAGE sql
STABLE
AS $$
    SELECT EXISTS (
        SELECT 1 FROM opsdeck.cron_job_registry
        WHERE user_id = p_user_id AND job_name = p_job_name
    );
$$;

-- What RunOperation / RefreshRecommendations jobs execute.
CREATE FUNCTION opsdeck.enqueue_cron_request(
    p_kind         text,
    p_user_id      uuid,
    p_job_name     text,
    p_operation_id text,
    p_arguments    jsonb
) RETURNS bigint
LANGUAGE sql
AS $$
    INSERT INTO opsdeck.cron_job_requests (user_id, job_name, kind, operation_id, arguments)
    VALUES (p_user_id, p_job_name, p_kind, p_operation_id, COALESCE(p_arguments, '{}'::jsonb))
    RETURNING request_id;
$$;

-- What PruneHistory jobs execute: deletes the user's run history older
-- than p_keep_days days from the runner's table and, when this database
-- is pg_cron's own, from cron.job_run_details. Returns the rows deleted.
CREATE FUNCTION opsdeck.prune_cron_history(p_user_id uuid, p_keep_days integer)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_cutoff  timestamptz := now() - make_interval(days => greatest(p_keep_days, 0));
    v_deleted bigint;
    v_more    bigint;
BEGIN
    DELETE FROM opsdeck.cron_job_runs
    WHERE user_id = p_user_id AND started_at < v_cutoff;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    IF to_regclass('cron.job_run_details') IS NOT NULL THEN
        EXECUTE 'DELETE FROM cron.job_run_details
                 WHERE jobid IN (SELECT pg_cron_job_id FROM opsdeck.cron_job_registry
                                 WHERE user_id = $1 AND pg_cron_job_id IS NOT NULL)
                   AND coalesce(end_time, start_time) < $2'
        USING p_user_id, v_cutoff;
        GET DIAGNOSTICS v_more = ROW_COUNT;
        v_deleted := v_deleted + v_more;
    END IF;
    RETURN v_deleted;
END
$$;
