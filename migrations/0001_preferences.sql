-- opsdeck schema and the preferences tables.
-- Applies on any PostgreSQL 13+; needs no extension (pg_cron is optional and
-- handled by later migrations).

CREATE SCHEMA IF NOT EXISTS opsdeck;

-- One row per (user, operation). The primary key (user_id, operation_id) is
-- the "user + operation lookup" index the seed's migration 047 names; a
-- second index on the same columns would only slow writes.
CREATE TABLE opsdeck.user_operation_preferences (
    user_id         uuid        NOT NULL,
    operation_id    text        NOT NULL,
    enabled         boolean     NOT NULL DEFAULT true,
    preferred_model text,
    settings        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version         bigint      NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_operation_preferences_pkey PRIMARY KEY (user_id, operation_id),
    -- The same rules as opsdeck_core::OperationId / ModelRef, so rows written
    -- by other clients stay readable.
    CONSTRAINT user_operation_preferences_operation_id_check
        CHECK (operation_id ~ '^[a-z0-9_.-]{1,64}$'),
    CONSTRAINT user_operation_preferences_preferred_model_check
        CHECK (preferred_model ~ '^[a-z0-9_-]{1,32}/[A-Za-z0-9._:/@-]{1,128}$'),
    CONSTRAINT user_operation_preferences_settings_check
        CHECK (jsonb_typeof(settings) = 'object'),
    CONSTRAINT user_operation_preferences_version_check CHECK (version >= 1)
);

COMMENT ON TABLE opsdeck.user_operation_preferences IS
    'Per-user, per-operation preferences (opsdeck-preferences).';

CREATE TABLE opsdeck.user_preferences (
    user_id    uuid        NOT NULL,
    theme      text        NOT NULL DEFAULT 'system',
    settings   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version    bigint      NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_preferences_pkey PRIMARY KEY (user_id),
    CONSTRAINT user_preferences_theme_check CHECK (theme IN ('light', 'dark', 'system')),
    CONSTRAINT user_preferences_settings_check CHECK (jsonb_typeof(settings) = 'object'),
    CONSTRAINT user_preferences_version_check CHECK (version >= 1)
);

COMMENT ON TABLE opsdeck.user_preferences IS
    'User-level preferences such as the theme (opsdeck-preferences).';
