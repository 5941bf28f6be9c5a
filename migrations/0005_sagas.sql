-- mire: durable sagas (process managers) and their outbox.
-- One row per saga instance. Workers claim due rows with
-- FOR UPDATE SKIP LOCKED; each transition commits in one transaction with the
-- events it emits, its outbox messages and its history entry.
CREATE TABLE es_saga_instances (
  saga_name text NOT NULL,
  instance_id text NOT NULL,
  correlation_id text NOT NULL UNIQUE,
  status text NOT NULL CHECK (status IN ('running', 'waiting', 'compensating', 'completed', 'failed')),
  step_index integer NOT NULL,
  state jsonb NOT NULL,
  input jsonb,
  awaiting text[],
  deadline timestamptz,
  due_at timestamptz NOT NULL,
  error text,
  version integer NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (saga_name, instance_id)
);
-- Due work: running or compensating instances by due time, waiting ones by deadline.
CREATE INDEX es_saga_instances_due_idx ON es_saga_instances (saga_name, due_at)
  WHERE status IN ('running', 'compensating');
CREATE INDEX es_saga_instances_deadline_idx ON es_saga_instances (saga_name, deadline)
  WHERE status = 'waiting';

-- Every transition, for status pages and audits.
CREATE TABLE es_saga_history (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  saga_name text NOT NULL,
  instance_id text NOT NULL,
  step text NOT NULL,
  outcome text NOT NULL,
  worker_id text NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX es_saga_history_instance_idx ON es_saga_history (saga_name, instance_id, id);

-- Effects outside the database, published at least once under a stable key.
CREATE TABLE es_outbox (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  idempotency_key text NOT NULL UNIQUE,
  topic text NOT NULL,
  payload jsonb NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz
);
CREATE INDEX es_outbox_pending_idx ON es_outbox (next_attempt_at) WHERE status = 'pending';
