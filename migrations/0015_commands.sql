-- mire: the command log of idempotent command handlers (CommandHandler with a
-- commandId). One row per command id that appended: its stream, the version
-- and position range of its events, their ids in order, and the appending
-- transaction's id. The row is inserted in the same transaction as the
-- command's events (INSERT … ON CONFLICT (command_id) DO NOTHING), so of two
-- concurrent transactions recording one id, the second waits on the first's
-- uncommitted key and inserts nothing once it commits: exactly one appends.
-- Only successful appends are recorded; nothing ever updates a row.
-- Rows are kept until an operator deletes them (e.g. by recorded_at: a command
-- id older than any client's retry window can go; its index makes that cheap).
-- A new, empty table and its indexes: instant on a populated log (no rewrite,
-- no scan of es_events, whatever its size), and it locks nothing but itself.
CREATE TABLE es_commands (
  command_id text PRIMARY KEY CHECK (length(command_id) BETWEEN 1 AND 255),
  stream_id text NOT NULL,
  first_version bigint NOT NULL CHECK (first_version >= 1),
  last_version bigint NOT NULL CHECK (last_version >= first_version),
  first_position bigint NOT NULL,
  last_position bigint NOT NULL CHECK (last_position >= first_position),
  transaction_id xid8 NOT NULL,
  event_ids uuid[] NOT NULL CHECK (cardinality(event_ids) = last_version - first_version + 1),
  recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Pruning by age.
CREATE INDEX es_commands_recorded_at_idx ON es_commands (recorded_at);
