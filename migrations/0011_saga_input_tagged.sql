-- mire: a saga instance's pending step input is stored as a tagged value
-- (`{"_tag": "Start", "event": {…}}`, `{"_tag": "Response", …}`,
-- `{"_tag": "None"}`) instead of `{"kind": …}`; a start input now also keeps
-- where its event was recorded. Rows written by older code are rewritten
-- here. A start input written before this migration did not record its
-- event's stream or position: it says so in `streamId`, which only names the
-- event if it no longer decodes. Touches only rows with a pending input of
-- the old shape (instances between two steps): milliseconds on any log.
UPDATE es_saga_instances
SET input = CASE input->>'kind'
  WHEN 'none' THEN jsonb_build_object('_tag', 'None')
  WHEN 'response' THEN jsonb_build_object('_tag', 'Response', 'eventType', input->'eventType', 'data', input->'data')
  WHEN 'start' THEN jsonb_build_object('_tag', 'Start', 'event', jsonb_build_object(
    'streamId', '(recorded before migration 0011)',
    'streamVersion', 0,
    'globalPosition', '0',
    'eventType', input->'eventType',
    'schemaVersion', input->'schemaVersion',
    'data', input->'data'))
END
WHERE input IS NOT NULL AND jsonb_typeof(input) = 'object' AND input ? 'kind';
