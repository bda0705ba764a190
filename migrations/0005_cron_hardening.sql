-- Cron registry hardening (opsdeck-cron-registry):
--
-- 1. The SQL entry points stop trusting their callers: every function of
--    0004 checks what the Rust types check (JobName, OperationId,
--    CronSchedule's grammar, JobCommand's kinds and arguments) and refuses
--    anything else with SQLSTATE 23514 (check_violation) naming the
--    constraint the Rust side maps to a field, writing nothing. The same
--    checks become CHECK constraints, so writes around the functions meet
--    them too (NOT VALID: rows written before are reported by the Rust
--    side as corrupt, never rejected by this migration).
-- 2. Requests are leased, not deleted, when taken (`leased_until`,
--    `attempts`); a consumer deletes a request when it has carried it out.
-- 3. Runner runs carry a deadline, may be recorded as `skipped` (the job's
--    previous run was still running) or `missed` (no runner was up), and
--    the registry keeps, per runner job, the latest slot settled
--    (`last_slot`), from which missed slots are found.
--
-- Applies with or without pg_cron: nothing here resolves `cron.*` when it
-- is created.

-- ---------------------------------------------------------------------------
-- Validators: the Rust rules, in SQL. Each `…_problem` function returns
-- NULL for a valid value, else why it is refused.
-- ---------------------------------------------------------------------------

-- Refuses with check_violation naming `p_constraint` (the Rust side maps
-- the name to the refused field, see postgres/db.rs).
CREATE FUNCTION opsdeck.cron_refuse(p_constraint text, p_message text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'check_violation',
        CONSTRAINT = p_constraint,
        MESSAGE = p_message;
END
$$;

-- JobName: 1-63 ASCII letters, digits, '_', '-', '.', ':', starting with a
-- letter or digit.
CREATE FUNCTION opsdeck.cron_job_name_is_valid(p_name text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(p_name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$', false);
$$;

-- OperationId: 1-64 of [a-z0-9_.-].
CREATE FUNCTION opsdeck.cron_operation_id_is_valid(p_operation text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(p_operation ~ '^[a-z0-9_.-]{1,64}$', false);
$$;

-- One value of a cron field: a three-letter name of `p_names` (any ASCII
-- case; the first name means p_min) or 1-9 ASCII digits within
-- [p_min, p_max]. NULL if invalid.
CREATE FUNCTION opsdeck.cron_field_value(p_text text, p_min integer, p_max integer, p_names text[])
RETURNS integer
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_index integer;
    v_value bigint;
BEGIN
    IF p_text ~ '^[A-Za-z]{3}$' THEN
        -- translate, not lower(): ASCII only, whatever the locale.
        v_index := array_position(p_names,
            translate(p_text, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'));
        IF v_index IS NOT NULL THEN
            RETURN p_min + v_index - 1;
        END IF;
    END IF;
    IF p_text IS NULL OR p_text !~ '^[0-9]{1,9}$' THEN
        RETURN NULL;
    END IF;
    v_value := p_text::bigint;
    IF v_value < p_min OR v_value > p_max THEN
        RETURN NULL;
    END IF;
    RETURN v_value;
END
$$;

-- A whole cron field as a bit set (bit v set when value v is allowed), or
-- NULL if invalid: a list of `*`, `v`, `a-b`, `*/n`, `a-b/n` (a <= b,
-- n >= 1; a step needs `*` or a range).
CREATE FUNCTION opsdeck.cron_field_bits(p_field text, p_min integer, p_max integer, p_names text[])
RETURNS bigint
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_bits  bigint := 0;
    v_item  text;
    v_range text;
    v_step  text;
    v_by    integer;
    v_at    integer;
    v_start integer;
    v_end   integer;
BEGIN
    IF p_field IS NULL OR p_field = '' THEN
        RETURN NULL;
    END IF;
    FOREACH v_item IN ARRAY string_to_array(p_field, ',') LOOP
        IF v_item = '' THEN
            RETURN NULL;
        END IF;
        v_at := position('/' IN v_item);
        IF v_at > 0 THEN
            v_range := left(v_item, v_at - 1);
            v_step := substr(v_item, v_at + 1);
            IF v_step !~ '^[0-9]{1,9}$' OR v_step::integer = 0 THEN
                RETURN NULL;
            END IF;
            v_by := v_step::integer;
        ELSE
            v_range := v_item;
            v_by := NULL;
        END IF;
        IF v_range = '*' THEN
            v_start := p_min;
            v_end := p_max;
        ELSE
            v_at := position('-' IN v_range);
            IF v_at > 0 THEN
                v_start := opsdeck.cron_field_value(left(v_range, v_at - 1), p_min, p_max, p_names);
                v_end := opsdeck.cron_field_value(substr(v_range, v_at + 1), p_min, p_max, p_names);
                IF v_start IS NULL OR v_end IS NULL OR v_start > v_end THEN
                    RETURN NULL;
                END IF;
            ELSIF v_by IS NOT NULL THEN
                -- pg_cron refuses `5/10`.
                RETURN NULL;
            ELSE
                v_start := opsdeck.cron_field_value(v_range, p_min, p_max, p_names);
                IF v_start IS NULL THEN
                    RETURN NULL;
                END IF;
                v_end := v_start;
            END IF;
        END IF;
        SELECT v_bits | coalesce(bit_or(1::bigint << v), 0)
        INTO v_bits
        FROM generate_series(v_start, v_end, coalesce(v_by, 1)) AS v;
    END LOOP;
    RETURN v_bits;
END
$$;

-- The schedule as pg_cron receives it (CronSchedule::as_str): blanks
-- (space, tab) trimmed and collapsed.
CREATE FUNCTION opsdeck.cron_schedule_normalize(p_schedule text)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT array_to_string(regexp_split_to_array(btrim(p_schedule, E' \t'), E'[ \t]+'), ' ');
$$;

-- CronSchedule::parse in SQL: five cron fields (names, ranges, steps,
-- lists; `$` as the whole day-of-month), an @alias, or `N seconds`; NULL if
-- valid, else why not. It accepts exactly what the Rust parser accepts
-- (tests/cron_registry/sql_entry_points.rs compares the two on thousands of
-- inputs), in pg_cron's newest syntax: the Rust side also checks the
-- detected pg_cron version (`N seconds` needs 1.5, `$` 1.6), which SQL
-- cannot know when pg_cron lives in another database.
CREATE FUNCTION opsdeck.cron_schedule_problem(p_schedule text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    c_months   CONSTANT text[] := ARRAY['jan', 'feb', 'mar', 'apr', 'may', 'jun',
                                        'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
    c_weekdays CONSTANT text[] := ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
    c_days_in  CONSTANT integer[] := ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    v_parts    text[];
    v_text     text;
    v_match    text[];
    v_minutes  bigint;
    v_hours    bigint;
    v_days     bigint;
    v_months   bigint;
    v_weekdays bigint;
BEGIN
    IF p_schedule IS NULL THEN
        RETURN 'schedule must not be NULL';
    END IF;
    IF octet_length(p_schedule) > 120 THEN
        RETURN 'schedule is longer than 120 bytes';
    END IF;
    v_text := opsdeck.cron_schedule_normalize(p_schedule);
    IF v_text = '' THEN
        RETURN 'schedule must not be empty';
    END IF;
    v_parts := string_to_array(v_text, ' ');

    IF left(v_parts[1], 1) = '@' THEN
        -- Case-sensitive, as pg_cron compares them.
        IF substr(v_parts[1], 2) NOT IN
               ('yearly', 'annually', 'monthly', 'weekly', 'daily', 'midnight', 'hourly') THEN
            RETURN format('unknown schedule alias %s', left(v_parts[1], 80));
        END IF;
        IF cardinality(v_parts) <> 1 THEN
            RETURN 'an @alias must be the whole schedule';
        END IF;
        RETURN NULL;
    END IF;

    -- `N second(s)`, any ASCII case; the blanks Rust's trim_start skips
    -- (Unicode White_Space) may separate number and unit. Patterns here
    -- avoid plain-string backslashes, which would change meaning in a
    -- session with standard_conforming_strings off.
    v_match := regexp_match(
        translate(v_text, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
        '^([0-9]+)(.*)$');
    IF v_match IS NOT NULL
       AND regexp_replace(v_match[2],
               E'^[\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+', '')
           IN ('second', 'seconds') THEN
        IF v_match[1]::numeric BETWEEN 1 AND 59 THEN
            RETURN NULL;
        END IF;
        RETURN 'an interval must be between 1 and 59 seconds';
    END IF;

    IF cardinality(v_parts) <> 5 THEN
        RETURN format('schedule has %s fields; expected 5 (minute hour day-of-month month day-of-week), an @alias or "N seconds"',
                      cardinality(v_parts));
    END IF;
    v_minutes := opsdeck.cron_field_bits(v_parts[1], 0, 59, '{}');
    v_hours := opsdeck.cron_field_bits(v_parts[2], 0, 23, '{}');
    v_months := opsdeck.cron_field_bits(v_parts[4], 1, 12, c_months);
    v_weekdays := opsdeck.cron_field_bits(v_parts[5], 0, 7, c_weekdays);
    IF v_minutes IS NULL THEN RETURN 'invalid minute field'; END IF;
    IF v_hours IS NULL THEN RETURN 'invalid hour field'; END IF;
    IF v_months IS NULL THEN RETURN 'invalid month field'; END IF;
    IF v_weekdays IS NULL THEN RETURN 'invalid day-of-week field'; END IF;
    IF v_parts[3] = '$' THEN
        -- The last day of the month always exists.
        RETURN NULL;
    END IF;
    v_days := opsdeck.cron_field_bits(v_parts[3], 1, 31, '{}');
    IF v_days IS NULL THEN
        RETURN 'invalid day-of-month field';
    END IF;
    -- Day-of-month and day-of-week combine with OR unless either starts
    -- with `*`; with AND the named days must exist in a named month.
    IF left(v_parts[3], 1) <> '*' AND left(v_parts[5], 1) <> '*' THEN
        RETURN NULL;
    END IF;
    FOR m IN 1..12 LOOP
        IF v_months & (1::bigint << m) <> 0
           AND v_days & ((2::bigint << c_days_in[m]) - 2) <> 0 THEN
            RETURN NULL;
        END IF;
    END LOOP;
    RETURN 'schedule never fires: no month in it has the days it names';
END
$$;

-- The length of a JSON value as Rust measures JsonValue (compact
-- serde_json text), or NULL if it holds a number Rust cannot read (beyond
-- f64). Strings, keys and 64-bit integers measure exactly; other numbers
-- as at least 24 bytes, the longest form Rust prints them in, so nothing
-- Rust would refuse passes (a value within a few bytes of the limit may be
-- refused here although Rust would accept it).
CREATE FUNCTION opsdeck.cron_json_size(p_value jsonb)
RETURNS bigint
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_sum   bigint;
    v_count bigint;
    v_bad   bigint;
    v_text  text;
BEGIN
    CASE jsonb_typeof(p_value)
    WHEN 'object' THEN
        SELECT coalesce(sum(octet_length(to_jsonb(e.key)::text) + 1 + e.size), 0),
               count(*), count(*) FILTER (WHERE e.size IS NULL)
        INTO v_sum, v_count, v_bad
        FROM (SELECT key, opsdeck.cron_json_size(value) AS size FROM jsonb_each(p_value)) AS e;
    WHEN 'array' THEN
        SELECT coalesce(sum(e.size), 0), count(*), count(*) FILTER (WHERE e.size IS NULL)
        INTO v_sum, v_count, v_bad
        FROM (SELECT opsdeck.cron_json_size(value) AS size FROM jsonb_array_elements(p_value)) AS e;
    WHEN 'number' THEN
        v_text := p_value::text;
        IF abs(p_value::numeric) > 1.7976931348623157e308 THEN
            RETURN NULL;
        END IF;
        IF v_text ~ '^-?[0-9]+$'
           AND p_value::numeric BETWEEN -9223372036854775808 AND 18446744073709551615 THEN
            RETURN octet_length(v_text);
        END IF;
        RETURN greatest(octet_length(v_text), 24);
    ELSE
        RETURN octet_length(p_value::text);
    END CASE;
    IF v_bad > 0 THEN
        RETURN NULL;
    END IF;
    RETURN 2 + v_sum + greatest(v_count - 1, 0);
END
$$;

-- Whether `p_value` is an object with exactly the keys `p_keys`.
CREATE FUNCTION opsdeck.cron_has_keys(p_value jsonb, p_keys text[])
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT jsonb_typeof(p_value) = 'object'
       AND coalesce((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(p_value) AS k), '{}')
           = (SELECT coalesce(array_agg(k ORDER BY k), '{}') FROM unnest(p_keys) AS k);
$$;

-- One SqlValue of a call_function command ({"type": …, "value": …}); NULL
-- if valid.
CREATE FUNCTION opsdeck.cron_sql_value_problem(p_value jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_value jsonb := p_value -> 'value';
    v_size  bigint;
BEGIN
    IF jsonb_typeof(p_value) <> 'object' OR jsonb_typeof(p_value -> 'type') <> 'string' THEN
        RETURN 'a function argument must be {"type": …, "value": …}';
    END IF;
    CASE p_value ->> 'type'
    WHEN 'null', 'job_user' THEN
        IF NOT opsdeck.cron_has_keys(p_value, ARRAY['type']) THEN
            RETURN format('a %s argument has no value', p_value ->> 'type');
        END IF;
        RETURN NULL;
    WHEN 'bool', 'int', 'text', 'json', 'uuid' THEN
        IF NOT opsdeck.cron_has_keys(p_value, ARRAY['type', 'value']) THEN
            RETURN format('a %s argument needs exactly a type and a value', p_value ->> 'type');
        END IF;
    ELSE
        RETURN format('unknown function argument type %s', left(p_value ->> 'type', 80));
    END CASE;
    CASE p_value ->> 'type'
    WHEN 'bool' THEN
        IF jsonb_typeof(v_value) <> 'boolean' THEN
            RETURN 'a bool argument must be true or false';
        END IF;
    WHEN 'int' THEN
        IF jsonb_typeof(v_value) <> 'number' OR v_value::text !~ '^-?[0-9]+$'
           OR v_value::numeric NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
            RETURN 'an int argument must be a 64-bit integer';
        END IF;
    WHEN 'text' THEN
        IF jsonb_typeof(v_value) <> 'string' OR octet_length(v_value #>> '{}') > 16384 THEN
            RETURN 'a text argument must be a string of at most 16384 bytes';
        END IF;
    WHEN 'json' THEN
        v_size := opsdeck.cron_json_size(v_value);
        IF v_size IS NULL OR v_size > 16384 THEN
            RETURN 'a json argument must be at most 16384 bytes, with numbers within f64';
        END IF;
    WHEN 'uuid' THEN
        IF jsonb_typeof(v_value) <> 'string'
           OR (v_value #>> '{}') !~ '^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32})$' THEN
            RETURN 'a uuid argument must be a UUID string';
        END IF;
    END CASE;
    RETURN NULL;
END
$$;

-- JobCommand::from_stored in SQL (kind + arguments as the registry stores
-- them); NULL if valid. Stricter than serde where that costs nothing:
-- unknown keys are refused (the Rust side never writes them).
CREATE FUNCTION opsdeck.cron_command_problem(p_kind text, p_args jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_size    bigint;
    v_problem text;
    v_arg     jsonb;
BEGIN
    IF p_kind IS NULL OR p_args IS NULL OR jsonb_typeof(p_args) <> 'object' THEN
        RETURN 'a command needs a kind and an object of arguments';
    END IF;
    CASE p_kind
    WHEN 'refresh_recommendations' THEN
        IF p_args <> '{}'::jsonb THEN
            RETURN 'refresh_recommendations takes no arguments';
        END IF;
    WHEN 'run_operation' THEN
        IF NOT opsdeck.cron_has_keys(p_args, ARRAY['arguments'])
           OR jsonb_typeof(p_args -> 'arguments') <> 'object' THEN
            RETURN 'run_operation needs {"arguments": {…}} (a JSON object)';
        END IF;
        v_size := opsdeck.cron_json_size(p_args -> 'arguments');
        IF v_size IS NULL OR v_size > 16384 THEN
            RETURN 'run_operation arguments must be at most 16384 bytes, with numbers within f64';
        END IF;
    WHEN 'prune_history' THEN
        IF NOT opsdeck.cron_has_keys(p_args, ARRAY['keep_days'])
           OR jsonb_typeof(p_args -> 'keep_days') <> 'number'
           OR (p_args ->> 'keep_days') !~ '^[0-9]+$'
           OR (p_args ->> 'keep_days')::numeric > 65535 THEN
            RETURN 'prune_history needs {"keep_days": 0-65535}';
        END IF;
    WHEN 'call_function' THEN
        IF NOT opsdeck.cron_has_keys(p_args, ARRAY['arguments', 'function'])
           OR jsonb_typeof(p_args -> 'function') <> 'string'
           OR (p_args ->> 'function') !~ '^[a-z_][a-z0-9_]{0,62}([.][a-z_][a-z0-9_]{0,62})?$'
           OR jsonb_typeof(p_args -> 'arguments') <> 'array' THEN
            RETURN 'call_function needs {"function": "name" or "schema.name", "arguments": [...]}';
        END IF;
        IF jsonb_array_length(p_args -> 'arguments') > 32 THEN
            RETURN 'call_function takes at most 32 arguments';
        END IF;
        FOR v_arg IN SELECT value FROM jsonb_array_elements(p_args -> 'arguments') LOOP
            v_problem := opsdeck.cron_sql_value_problem(v_arg);
            IF v_problem IS NOT NULL THEN
                RETURN v_problem;
            END IF;
        END LOOP;
    ELSE
        RETURN format('unknown command kind %s', left(p_kind, 80));
    END CASE;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION opsdeck.cron_schedule_problem(text) IS
    'NULL if the text is a schedule opsdeck-cron-registry accepts (CronSchedule::parse), else why not.';
COMMENT ON FUNCTION opsdeck.cron_command_problem(text, jsonb) IS
    'NULL if (kind, arguments) is a stored JobCommand opsdeck-cron-registry reads, else why not.';

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

ALTER TABLE opsdeck.cron_job_registry
    DROP CONSTRAINT cron_job_registry_schedule_check,
    ADD CONSTRAINT cron_job_registry_schedule_check
        CHECK (opsdeck.cron_schedule_problem(schedule) IS NULL) NOT VALID,
    ADD CONSTRAINT cron_job_registry_command_check
        CHECK (opsdeck.cron_command_problem(command_kind, command_args) IS NULL) NOT VALID,
    -- The latest slot the runner settled for this job (ran, skipped or
    -- recorded missed); slots after it and before the current one with no
    -- record were missed. Kept here rather than derived from the runs,
    -- which retention deletes.
    ADD COLUMN last_slot timestamptz;

UPDATE opsdeck.cron_job_registry j
SET last_slot = (SELECT max(r.scheduled_for) FROM opsdeck.cron_job_runs r
                 WHERE r.user_id = j.user_id AND r.job_id = j.id)
WHERE j.scheduler = 'runner';

ALTER TABLE opsdeck.cron_job_runs
    -- When the run's runner gives up on it; a run still `running` well
    -- after its deadline was abandoned by a dead runner and is recovered as
    -- failed. The default covers runners of the previous release.
    ADD COLUMN deadline timestamptz NOT NULL DEFAULT (now() + interval '10 minutes'),
    DROP CONSTRAINT cron_job_runs_status_check,
    ADD CONSTRAINT cron_job_runs_status_check
        CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'missed'));

-- "Is a run of this job in progress?" (every claim) and recovery scans:
-- the running runs are few, whatever the history's size.
CREATE INDEX cron_job_runs_running_idx
    ON opsdeck.cron_job_runs (user_id, job_id)
    WHERE status = 'running';

ALTER TABLE opsdeck.cron_job_requests
    -- Taken requests are leased to their consumer until this time, then
    -- delivered again; NULL: not leased.
    ADD COLUMN leased_until timestamptz,
    -- How many times the request has been delivered.
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT cron_job_requests_attempts_check CHECK (attempts >= 0);

COMMENT ON TABLE opsdeck.cron_job_requests IS
    'Requests queued by fired cron jobs, leased to consumers by take_requests and deleted when completed.';

-- ---------------------------------------------------------------------------
-- The entry points of 0004, now checking their input. Signatures (names,
-- defaults, results) are unchanged.
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION opsdeck.register_cron_job(
    p_user_id      uuid,
    p_job_name     text,
    p_operation_id text,
    p_schedule     text,
    p_command_kind text,
    p_command_args jsonb DEFAULT '{}'::jsonb,
    p_active       boolean DEFAULT true,
    p_scheduler    text DEFAULT 'runner'
) RETURNS opsdeck.cron_job_registry
LANGUAGE plpgsql
AS $$
DECLARE
    v_args      jsonb := coalesce(p_command_args, '{}'::jsonb);
    v_scheduler text := coalesce(p_scheduler, 'runner');
    v_problem   text;
    v_row       opsdeck.cron_job_registry;
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'not_null_violation', MESSAGE = 'user id must not be NULL';
    END IF;
    IF NOT opsdeck.cron_job_name_is_valid(p_job_name) THEN
        PERFORM opsdeck.cron_refuse('cron_job_registry_job_name_check',
            format('invalid job name %L', left(p_job_name, 80)));
    END IF;
    IF NOT opsdeck.cron_operation_id_is_valid(p_operation_id) THEN
        PERFORM opsdeck.cron_refuse('cron_job_registry_operation_id_check',
            format('invalid operation id %L', left(p_operation_id, 80)));
    END IF;
    v_problem := opsdeck.cron_schedule_problem(p_schedule);
    IF v_problem IS NOT NULL THEN
        PERFORM opsdeck.cron_refuse('cron_job_registry_schedule_check',
            format('invalid schedule %L: %s', left(p_schedule, 80), v_problem));
    END IF;
    v_problem := opsdeck.cron_command_problem(p_command_kind, v_args);
    IF v_problem IS NOT NULL THEN
        PERFORM opsdeck.cron_refuse('cron_job_registry_command_check',
            format('invalid command: %s', v_problem));
    END IF;
    IF v_scheduler NOT IN ('pg_cron', 'runner') THEN
        PERFORM opsdeck.cron_refuse('cron_job_registry_scheduler_check',
            format('invalid scheduler %L', left(v_scheduler, 80)));
    END IF;

    INSERT INTO opsdeck.cron_job_registry AS r
        (user_id, job_name, operation_id, schedule, command_kind, command_args, active, scheduler)
    VALUES (p_user_id, p_job_name, p_operation_id, opsdeck.cron_schedule_normalize(p_schedule),
            p_command_kind, v_args, coalesce(p_active, true), v_scheduler)
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
    RETURNING r.* INTO v_row;
    RETURN v_row;
END
$$;

CREATE OR REPLACE FUNCTION opsdeck.unregister_cron_job(p_user_id uuid, p_job_name text)
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    v_deleted integer;
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'not_null_violation', MESSAGE = 'user id must not be NULL';
    END IF;
    IF NOT opsdeck.cron_job_name_is_valid(p_job_name) THEN
        PERFORM opsdeck.cron_refuse('cron_job_registry_job_name_check',
            format('invalid job name %L', left(p_job_name, 80)));
    END IF;
    DELETE FROM opsdeck.cron_job_registry
    WHERE user_id = p_user_id AND job_name = p_job_name;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted > 0;
END
$$;

CREATE OR REPLACE FUNCTION opsdeck.check_cron_job_exists(p_user_id uuid, p_job_name text)
RETURNS boolean
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'not_null_violation', MESSAGE = 'user id must not be NULL';
    END IF;
    IF NOT opsdeck.cron_job_name_is_valid(p_job_name) THEN
        PERFORM opsdeck.cron_refuse('cron_job_registry_job_name_check',
            format('invalid job name %L', left(p_job_name, 80)));
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM opsdeck.cron_job_registry
        WHERE user_id = p_user_id AND job_name = p_job_name
    );
END
$$;

CREATE OR REPLACE FUNCTION opsdeck.enqueue_cron_request(
    p_kind         text,
    p_user_id      uuid,
    p_job_name     text,
    p_operation_id text,
    p_arguments    jsonb
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_arguments jsonb := coalesce(p_arguments, '{}'::jsonb);
    v_id        bigint;
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'not_null_violation', MESSAGE = 'user id must not be NULL';
    END IF;
    IF p_kind IS NULL OR p_kind NOT IN ('run_operation', 'refresh_recommendations') THEN
        PERFORM opsdeck.cron_refuse('cron_job_requests_kind_check',
            format('invalid request kind %L', left(p_kind, 80)));
    END IF;
    IF NOT opsdeck.cron_job_name_is_valid(p_job_name) THEN
        PERFORM opsdeck.cron_refuse('cron_job_requests_job_name_check',
            format('invalid job name %L', left(p_job_name, 80)));
    END IF;
    IF NOT opsdeck.cron_operation_id_is_valid(p_operation_id) THEN
        PERFORM opsdeck.cron_refuse('cron_job_requests_operation_id_check',
            format('invalid operation id %L', left(p_operation_id, 80)));
    END IF;
    IF jsonb_typeof(v_arguments) <> 'object' THEN
        PERFORM opsdeck.cron_refuse('cron_job_requests_arguments_check',
            'request arguments must be a JSON object');
    END IF;
    INSERT INTO opsdeck.cron_job_requests (user_id, job_name, kind, operation_id, arguments)
    VALUES (p_user_id, p_job_name, p_kind, p_operation_id, v_arguments)
    RETURNING request_id INTO v_id;
    RETURN v_id;
END
$$;

-- What PruneHistory jobs execute: deletes the user's run history older
-- than p_keep_days (0-65535, JobCommand's u16) days from the runner's table
-- and, when this database is pg_cron's own, from cron.job_run_details —
-- only runs of this registry's jobs of that user. Returns the rows deleted.
CREATE OR REPLACE FUNCTION opsdeck.prune_cron_history(p_user_id uuid, p_keep_days integer)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_cutoff  timestamptz;
    v_deleted bigint;
    v_more    bigint;
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'not_null_violation', MESSAGE = 'user id must not be NULL';
    END IF;
    IF p_keep_days IS NULL OR p_keep_days NOT BETWEEN 0 AND 65535 THEN
        PERFORM opsdeck.cron_refuse('cron_job_registry_command_check',
            format('keep_days must be 0-65535, not %s', coalesce(p_keep_days::text, 'NULL')));
    END IF;
    v_cutoff := now() - make_interval(days => p_keep_days);

    DELETE FROM opsdeck.cron_job_runs
    WHERE user_id = p_user_id AND coalesce(ended_at, started_at) < v_cutoff;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    IF to_regclass('cron.job_run_details') IS NOT NULL THEN
        EXECUTE 'DELETE FROM cron.job_run_details
                 WHERE jobid IN (SELECT pg_cron_job_id FROM opsdeck.cron_job_registry
                                 WHERE user_id = $1 AND pg_cron_job_id IS NOT NULL)
                   AND database = current_database()
                   AND coalesce(end_time, start_time) < $2'
        USING p_user_id, v_cutoff;
        GET DIAGNOSTICS v_more = ROW_COUNT;
        v_deleted := v_deleted + v_more;
    END IF;
    RETURN v_deleted;
END
$$;
