-- Recommendations that no longer hold expire (opsdeck-analytics): a
-- generation that no longer finds an active recommendation, or an expiry
-- job for recommendations not refreshed since a cutoff, moves it to
-- 'expired'. Applies with or without pg_cron.

ALTER TABLE opsdeck.optimization_recommendations
    DROP CONSTRAINT optimization_recommendations_status_check,
    ADD CONSTRAINT optimization_recommendations_status_check
        CHECK (status IN ('active', 'dismissed', 'applied', 'expired'));

-- expire_recommendations_before scans the active rows of every user by
-- their last refresh.
CREATE INDEX optimization_recommendations_active_updated_idx
    ON opsdeck.optimization_recommendations (updated_at)
    WHERE status = 'active';
