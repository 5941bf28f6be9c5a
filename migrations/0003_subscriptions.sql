-- mire: subscription checkpoints and projection leases.
-- The checkpoint is the cursor (last_transaction_id, last_position), compared
-- as a tuple. worker_id / fence_token / leased_until are the fenced lease: an
-- acquisition bumps fence_token, and every checkpoint (and every transactional
-- handler's transaction) commits only while the token is still the writer's.
CREATE TABLE es_subscriptions (
  subscription_id text PRIMARY KEY,
  last_transaction_id xid8 NOT NULL DEFAULT '0'::xid8,
  last_position bigint NOT NULL DEFAULT 0,
  worker_id text,
  fence_token bigint NOT NULL DEFAULT 0,
  leased_until timestamptz NOT NULL DEFAULT '-infinity',
  updated_at timestamptz NOT NULL DEFAULT now()
);
