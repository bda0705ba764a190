-- Stores the user's complete current findings as active recommendations in
-- ONE statement, and expires the active ones they no longer include.
-- $1 user_id; $2..$6 parallel arrays, one element per finding, unique by
-- (kind, subject) and sorted by it: $2 kind, $3 subject, $4 operation_id,
-- $5 model (NULL for per-operation findings), $6 details (JSON text);
-- $7 cooldown.
-- A finding whose (kind, subject) was dismissed or applied within the
-- cooldown is skipped (an expiry is not the user's decision: it does not
-- suppress). An active one is refreshed in place: the partial unique index
-- on (user_id, kind, subject) WHERE status = 'active' is the arbiter, so
-- two generators racing for one user cannot create duplicates. The expiry
-- and the upsert touch disjoint (kind, subject) sets, so one statement can
-- do both atomically.
WITH input AS (
    SELECT *
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
        AS i(kind, subject, operation_id, model, details)
),
expired AS (
    UPDATE opsdeck.optimization_recommendations AS r
    SET status = 'expired', status_changed_at = now(), updated_at = now()
    WHERE r.user_id = $1
      AND r.status = 'active'
      AND NOT EXISTS (
          SELECT FROM input AS i WHERE i.kind = r.kind AND i.subject = r.subject
      )
),
allowed AS (
    SELECT i.*
    FROM input AS i
    WHERE NOT EXISTS (
        SELECT
        FROM opsdeck.optimization_recommendations AS r
        WHERE r.user_id = $1
          AND r.kind = i.kind
          AND r.subject = i.subject
          AND r.status IN ('dismissed', 'applied')
          AND r.status_changed_at > now() - $7::interval
    )
)
INSERT INTO opsdeck.optimization_recommendations AS r
    (user_id, kind, subject, operation_id, model, details)
SELECT $1, a.kind, a.subject, a.operation_id, a.model, a.details::jsonb
FROM allowed AS a
ORDER BY a.kind, a.subject
ON CONFLICT (user_id, kind, subject) WHERE status = 'active' DO UPDATE
SET details    = EXCLUDED.details,
    updated_at = now()
RETURNING r.id, r.user_id, r.details, r.status, r.created_at, r.updated_at, r.status_changed_at
