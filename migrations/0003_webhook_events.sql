-- The durable inbox of verified incoming webhooks (opsdeck-webhook-verify).
-- A row is written only after its signature verified, so everything here
-- was sent by a holder of the endpoint's secret.
--
-- Events belong to an endpoint (`source`), not to a user: the handler that
-- processes one decides which user, if any, it concerns.

CREATE TABLE opsdeck.webhook_events (
    id              uuid        NOT NULL,
    -- The receiving endpoint's name, e.g. 'stripe' or 'github-ci'.
    source          text        NOT NULL,
    -- The signature scheme that verified it: standard, stripe, github, slack
    -- (or an application's own scheme).
    scheme          text        NOT NULL,
    -- The sender's id for the message (webhook-id, X-GitHub-Delivery, the
    -- body's event id, or a digest of timestamp and body when there is none).
    external_id     text        NOT NULL,
    event_type      text,
    -- Which key of the endpoint's key set verified the signature (rotation).
    key_id          text        NOT NULL,
    -- Only the headers worth keeping; never the signature headers.
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Exactly one of these holds the body: jsonb when it is JSON.
    payload         jsonb,
    payload_bytes   bytea,
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'received',
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    -- When a worker may claim it next: arrival, the end of a retry backoff,
    -- or, while processing, the end of the claimant's lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_events_pkey PRIMARY KEY (id),
    -- The duplicate detector: a sender retrying a delivery reuses its id.
    CONSTRAINT webhook_events_source_external_id_key UNIQUE (source, external_id),
    CONSTRAINT webhook_events_source_check CHECK (source ~ '^[a-z0-9_.-]{1,64}$'),
    CONSTRAINT webhook_events_scheme_check CHECK (scheme ~ '^[a-z0-9_.-]{1,32}$'),
    CONSTRAINT webhook_events_external_id_check
        CHECK (char_length(external_id) BETWEEN 1 AND 255),
    CONSTRAINT webhook_events_status_check
        CHECK (status IN ('received', 'processing', 'processed', 'failed')),
    CONSTRAINT webhook_events_attempts_check CHECK (attempts >= 0),
    CONSTRAINT webhook_events_payload_check CHECK ((payload IS NULL) <> (payload_bytes IS NULL)),
    CONSTRAINT webhook_events_headers_check CHECK (jsonb_typeof(headers) = 'object')
);

-- Workers look only at events still to do; processed rows, the vast
-- majority, stay out of this index.
CREATE INDEX webhook_events_due_idx
    ON opsdeck.webhook_events (next_attempt_at)
    WHERE status IN ('received', 'processing');

COMMENT ON TABLE opsdeck.webhook_events IS
    'Verified incoming webhooks and their processing state (opsdeck-webhook-verify).';
