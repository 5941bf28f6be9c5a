-- mire: who builds a shard index (issue 15, partitioned projections). Two
-- CREATE INDEX CONCURRENTLY on es_events at once deadlock (each waits for
-- the other's snapshot), and the one killed leaves an INVALID index behind.
-- So a store builds a shard index only while it holds the table's row here
-- (one build at a time per table, whatever the index):
-- it claims it (INSERT … ON CONFLICT DO UPDATE … WHERE the claim expired),
-- renews the claim while the build runs, and deletes the row when it is done.
-- Every other store (process, pool) polls, with short statements that hold
-- no snapshot across the build, until the index is valid or the claim is
-- gone (then it claims it itself). A claim not renewed for claimed_until
-- (a crashed builder) can be taken over. No advisory locks: they do not
-- survive a transaction-pooling PgBouncer.
-- Creating an empty table takes no lock on any existing table and is instant
-- on any size of log (nothing per event).
CREATE TABLE es_index_builds (
  relation text PRIMARY KEY,
  claimed_by text NOT NULL,
  claimed_until timestamptz NOT NULL
);
