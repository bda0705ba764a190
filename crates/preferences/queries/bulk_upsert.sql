-- Bulk patch-upsert of one user's operation preferences in ONE statement.
-- $1 user_id; $2..$6 parallel arrays, one element per (deduplicated) patch:
--   $2 operation_id, $3 enabled (NULL = unchanged), $4 model_given,
--   $5 preferred_model (used only when model_given), $6 settings (NULL = unchanged).
-- Existing rows are updated field by field (UPDATE re-reads a row a concurrent
-- writer changed, so no field is lost); missing rows are inserted with
-- defaults. The input is sorted by operation_id and `locked` takes the row
-- locks in that order, so two bulk writes of one user cannot deadlock.
WITH input AS (
    SELECT *
    FROM UNNEST($2::text[], $3::bool[], $4::bool[], $5::text[], $6::text[])
        AS i(operation_id, enabled, model_given, preferred_model, settings)
),
locked AS (
    SELECT p.operation_id
    FROM opsdeck.user_operation_preferences AS p
    WHERE p.user_id = $1 AND p.operation_id = ANY ($2::text[])
    ORDER BY p.operation_id
    FOR UPDATE
),
updated AS (
    UPDATE opsdeck.user_operation_preferences AS p
    SET enabled         = COALESCE(i.enabled, p.enabled),
        preferred_model = CASE WHEN i.model_given THEN i.preferred_model ELSE p.preferred_model END,
        settings        = COALESCE(i.settings::jsonb, p.settings),
        version         = p.version + 1,
        updated_at      = now()
    FROM input AS i
    JOIN locked AS l ON l.operation_id = i.operation_id
    WHERE p.user_id = $1 AND p.operation_id = i.operation_id
    RETURNING p.user_id, p.operation_id, p.enabled, p.preferred_model, p.settings,
              p.version, p.created_at, p.updated_at
),
inserted AS (
    INSERT INTO opsdeck.user_operation_preferences AS p
        (user_id, operation_id, enabled, preferred_model, settings)
    SELECT $1, i.operation_id, COALESCE(i.enabled, true), i.preferred_model,
           COALESCE(i.settings::jsonb, '{}'::jsonb)
    FROM input AS i
    WHERE NOT EXISTS (SELECT 1 FROM updated AS u WHERE u.operation_id = i.operation_id)
    ORDER BY i.operation_id
    -- Only reached when another writer created the row after our snapshot:
    -- the patch still applies over the other writer's values, field by
    -- field. EXCLUDED carries the insert's defaults for fields the patch did
    -- not give, so the given-ness is read back from `input`.
    ON CONFLICT (user_id, operation_id) DO UPDATE
    SET enabled         = COALESCE(
                              (SELECT i.enabled FROM input AS i WHERE i.operation_id = EXCLUDED.operation_id),
                              p.enabled),
        preferred_model = CASE
                              WHEN (SELECT i.model_given FROM input AS i WHERE i.operation_id = EXCLUDED.operation_id)
                              THEN EXCLUDED.preferred_model
                              ELSE p.preferred_model
                          END,
        settings        = COALESCE(
                              (SELECT i.settings::jsonb FROM input AS i WHERE i.operation_id = EXCLUDED.operation_id),
                              p.settings),
        version         = p.version + 1,
        updated_at      = now()
    RETURNING p.user_id, p.operation_id, p.enabled, p.preferred_model, p.settings,
              p.version, p.created_at, p.updated_at
)
SELECT * FROM updated
UNION ALL
SELECT * FROM inserted
ORDER BY operation_id
