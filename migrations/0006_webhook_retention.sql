-- Retention of the webhook event log (opsdeck-webhook-verify):
-- `EventRepository::purge_events_before(cutoff)` deletes processed and
-- failed events that became final before the cutoff. A final row is never
-- updated again, so its `updated_at` is when it became final.
--
-- Only final rows are in this index (pending ones are in
-- `webhook_events_due_idx`), so the purge finds its batches without
-- scanning the events still to do, oldest first.
CREATE INDEX webhook_events_finished_idx
    ON opsdeck.webhook_events (updated_at)
    WHERE status IN ('processed', 'failed');
