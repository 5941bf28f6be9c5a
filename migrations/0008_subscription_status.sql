-- mire: what `mire status` shows of a subscription beyond its checkpoint.
-- categories: what it reads (NULL: every category), recorded when it starts
-- (and after its first checkpoint), so its lag counts only those categories.
-- failure / failed_at: why it stopped (a missing version, a log or checkpoint
-- ahead of the server's transaction ids, a handler that kept failing), set
-- when it fails and cleared by its next checkpoint or reset.
-- Adding nullable columns rewrites nothing, so this is safe on a populated
-- table (a brief ACCESS EXCLUSIVE lock only).
ALTER TABLE es_subscriptions
  ADD COLUMN categories text[],
  ADD COLUMN failure text,
  ADD COLUMN failed_at timestamptz;
