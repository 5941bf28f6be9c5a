-- mire: live workers, so that projection runners spread their units (a
-- subscription, or each shard of a partitioned projection) across replicas.
-- A runner upserts its row at every look (once per lease recheck interval),
-- with the database's clock; a row silent for longer than the lease ttl is
-- not live, one silent for 10 × ttl is deleted by the next look, and a clean
-- shutdown deletes its own. Leases stay in es_subscriptions: this table only
-- says who is alive, so the fair share is ⌈units ÷ live peers⌉. units_key
-- identifies the set of units a runner runs (a hash of the sorted unit ids):
-- only runners with the same key are peers sharing those units; a runner of
-- other projections on the same database is not counted.
-- Creating an empty table takes no lock on any existing table and is instant
-- on any size of log (nothing per event).
CREATE TABLE es_workers (
  worker_id text PRIMARY KEY,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  units_key text NOT NULL DEFAULT ''
);
