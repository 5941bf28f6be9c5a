-- mire: what a checkpoint knows beyond its cursor. While an event is held
-- back, the cursor stays before it, but other streams' events after it may
-- already have been delivered; `delivered` maps those streams to the version
-- delivered, so a restart skips them instead of delivering them again (or
-- mistaking them for an ordering violation).
ALTER TABLE es_subscriptions ADD COLUMN delivered jsonb NOT NULL DEFAULT '{}'::jsonb;
