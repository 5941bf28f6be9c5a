-- mire: saga instances are claimed, not locked, while a step runs.
-- A worker claims a due instance in one short statement (a fresh
-- claim_token, hidden from other workers until claimed_until), runs the step
-- with no transaction open, and writes the outcome in a short transaction
-- that holds only if the row still carries its token and version; a worker
-- whose claim expired and was taken over writes nothing.
-- attempts / last_error: failed attempts of the current transition (a
-- StoreError while writing an outcome, a failing compensation), retried
-- with backoff; reset when a transition commits.
-- Adding nullable columns and a constant default rewrites nothing, so this is
-- safe on a populated table (a brief ACCESS EXCLUSIVE lock only).
ALTER TABLE es_saga_instances
  ADD COLUMN claim_token uuid,
  ADD COLUMN claimed_until timestamptz,
  ADD COLUMN attempts integer NOT NULL DEFAULT 0,
  ADD COLUMN last_error text;
