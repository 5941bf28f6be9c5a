/**
 * The PostgreSQL `SagaStore`: `es_saga_instances`, `es_saga_history` and
 * `es_outbox`. A due instance is claimed by one short `UPDATE` (over
 * `FOR UPDATE SKIP LOCKED`) that stamps it with a claim token and an expiry,
 * so several workers share the work without leases, no transaction stays
 * open while a step runs, and a crashed worker's claims expire; outcomes are
 * written in a transaction that locks the row and checks the token. Row locks
 * are transaction-scoped, so this works behind PgBouncer's transaction
 * pooling. Workers are woken by
 * `pg_notify('mire_sagas', <saga>)`, sent on commit.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type { JsonObject } from "@mire/core/RecordedEvent"
import type * as SagaStore from "@mire/core/SagaStore"
import { SagaStoreTag } from "@mire/core/SagaStore"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { refail } from "./internal/errors.js"
import * as PgWakeups from "./PgWakeups.js"

/**
 * The channel saga workers listen on.
 *
 * @since 0.1.0
 */
export const channel = "mire_sagas"

interface Row {
  readonly saga_name: string
  readonly instance_id: string
  readonly correlation_id: string
  readonly status: SagaStore.Status
  readonly step_index: number
  readonly state: unknown
  readonly input: SagaStore.StoredInput | null
  readonly awaiting: ReadonlyArray<string> | null
  readonly deadline: Date | null
  readonly due_at: Date
  readonly error: string | null
  readonly attempts: number
  readonly last_error: string | null
  readonly version: number
  readonly updated_at: Date
}

const toInstance = (row: Row): SagaStore.InstanceRow => ({
  sagaName: row.saga_name,
  instanceId: row.instance_id,
  correlationId: row.correlation_id,
  status: row.status,
  stepIndex: row.step_index,
  state: row.state,
  input: row.input,
  awaiting: row.awaiting,
  deadline: row.deadline,
  dueAt: row.due_at,
  error: row.error,
  attempts: row.attempts,
  lastError: row.last_error,
  version: row.version,
  updatedAt: row.updated_at
})

const columns = `saga_name, instance_id, correlation_id, status, step_index, state, input, awaiting, deadline,
  due_at, error, attempts, last_error, version, updated_at`

interface OutboxRowDb {
  readonly id: string
  readonly idempotency_key: string
  readonly topic: string
  readonly payload: JsonObject
  readonly attempts: number
  readonly status?: string
}

const toOutbox = (row: OutboxRowDb): SagaStore.OutboxRow => ({
  id: BigInt(row.id),
  idempotencyKey: row.idempotency_key,
  topic: row.topic,
  payload: row.payload,
  attempts: row.attempts
})

/**
 * Builds the store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<SagaStore.SagaStore, never, PgClient.PgClient | PgWakeups.PgWakeupsTag> = Effect.gen(function* () {
  const client = yield* PgClient.PgClient
  const listener = yield* PgWakeups.PgWakeupsTag
  const sql = client.withoutTransforms()
  const cols = sql.literal(columns)
  const json = (value: unknown) => (value === null || value === undefined ? null : JSON.stringify(value))

  return {
    insert: (row) =>
      sql`
        INSERT INTO es_saga_instances (saga_name, instance_id, correlation_id, status, step_index, state, input,
          awaiting, deadline, due_at, error, attempts, last_error, version)
        VALUES (${row.sagaName}, ${row.instanceId}, ${row.correlationId}, ${row.status}, ${row.stepIndex},
          ${json(row.state)}::jsonb, ${json(row.input)}::jsonb, ${row.awaiting === null ? null : [...row.awaiting]}::text[],
          ${row.deadline}, ${row.dueAt}, ${row.error}, ${row.attempts}, ${row.lastError}, ${row.version})
        ON CONFLICT (saga_name, instance_id) DO NOTHING
        RETURNING 1`.pipe(
        Effect.map((rows) => rows.length > 0),
        refail("sagaInsert")
      ),
    claimDue: (sagaName, now, token, until) =>
      sql<Row>`
        UPDATE es_saga_instances SET claim_token = ${token}::uuid, claimed_until = ${until}
        FROM (
          SELECT saga_name AS due_saga, instance_id AS due_instance FROM es_saga_instances
          WHERE saga_name = ${sagaName}
            AND ((status IN ('running', 'compensating') AND due_at <= ${now})
              OR (status = 'waiting' AND deadline <= ${now}))
            AND (claimed_until IS NULL OR claimed_until <= ${now})
          ORDER BY due_at
          LIMIT 1
          FOR UPDATE SKIP LOCKED) due
        WHERE saga_name = due.due_saga AND instance_id = due.due_instance
        RETURNING ${cols}`.pipe(
        Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toInstance)),
        refail("sagaClaimDue")
      ),
    holdsClaim: (sagaName, instanceId, token, version) =>
      sql`
        SELECT 1 FROM es_saga_instances
        WHERE saga_name = ${sagaName} AND instance_id = ${instanceId}
          AND claim_token = ${token}::uuid AND version = ${version}
        FOR UPDATE`.pipe(
        Effect.map((rows) => rows.length > 0),
        refail("sagaHoldsClaim")
      ),
    extendClaim: (sagaName, instanceId, token, until, failure) =>
      (failure === undefined
        ? sql`
            UPDATE es_saga_instances SET claimed_until = ${until}
            WHERE saga_name = ${sagaName} AND instance_id = ${instanceId} AND claim_token = ${token}::uuid
            RETURNING 1`
        : sql`
            UPDATE es_saga_instances
            SET claimed_until = ${until}, attempts = ${failure.attempts}, last_error = ${failure.lastError}
            WHERE saga_name = ${sagaName} AND instance_id = ${instanceId} AND claim_token = ${token}::uuid
            RETURNING 1`
      ).pipe(
        Effect.map((rows) => rows.length > 0),
        refail("sagaExtendClaim")
      ),
    claimWaiting: (correlationId) =>
      sql<Row>`
        SELECT ${cols} FROM es_saga_instances
        WHERE correlation_id = ${correlationId} AND status = 'waiting'
        FOR UPDATE`.pipe(
        Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toInstance)),
        refail("sagaClaimWaiting")
      ),
    update: (row) =>
      sql`
        UPDATE es_saga_instances SET
          status = ${row.status}, step_index = ${row.stepIndex}, state = ${json(row.state)}::jsonb,
          input = ${json(row.input)}::jsonb, awaiting = ${row.awaiting === null ? null : [...row.awaiting]}::text[],
          deadline = ${row.deadline}, due_at = ${row.dueAt}, error = ${row.error}, attempts = ${row.attempts},
          last_error = ${row.lastError}, version = ${row.version}, claim_token = NULL, claimed_until = NULL,
          updated_at = now()
        WHERE saga_name = ${row.sagaName} AND instance_id = ${row.instanceId}`.pipe(Effect.asVoid, refail("sagaUpdate")),
    appendHistory: (entry) =>
      sql`
        INSERT INTO es_saga_history (saga_name, instance_id, step, outcome, worker_id)
        VALUES (${entry.sagaName}, ${entry.instanceId}, ${entry.step}, ${entry.outcome}, ${entry.workerId})`.pipe(
        Effect.asVoid,
        refail("sagaHistory")
      ),
    enqueue: (messages) =>
      sql`
        INSERT INTO es_outbox (idempotency_key, topic, payload)
        SELECT * FROM unnest(${messages.map((m) => m.idempotencyKey)}::text[], ${messages.map((m) => m.topic)}::text[],
          ${messages.map((m) => m.payloadJson)}::jsonb[])
        ON CONFLICT (idempotency_key) DO NOTHING`.pipe(Effect.asVoid, refail("outboxEnqueue")),
    claimOutbox: (now, visibleAt, limit) =>
      sql<OutboxRowDb>`
        UPDATE es_outbox SET next_attempt_at = ${visibleAt}, attempts = attempts + 1
        WHERE id IN (
          SELECT id FROM es_outbox WHERE status = 'pending' AND next_attempt_at <= ${now}
          ORDER BY id LIMIT ${limit} FOR UPDATE SKIP LOCKED)
        RETURNING id::text AS id, idempotency_key, topic, payload, attempts`.pipe(
        Effect.map((rows) => rows.map(toOutbox)),
        refail("outboxClaim")
      ),
    markPublished: (id) =>
      sql`UPDATE es_outbox SET status = 'published', published_at = now() WHERE id = ${id.toString()}::int8`.pipe(
        Effect.asVoid,
        refail("outboxPublished")
      ),
    markFailed: (id, retryAt, error) =>
      sql`UPDATE es_outbox SET next_attempt_at = ${retryAt}, last_error = ${error} WHERE id = ${id.toString()}::int8`.pipe(
        Effect.asVoid,
        refail("outboxFailed")
      ),
    outbox: sql<OutboxRowDb>`
      SELECT id::text AS id, idempotency_key, topic, payload, attempts, status FROM es_outbox ORDER BY id`.pipe(
      Effect.map((rows) => rows.map((row) => ({ ...toOutbox(row), published: row.status === "published" }))),
      refail("outbox")
    ),
    counts: (sagaName) =>
      sql<{ status: SagaStore.Status; n: number }>`
        SELECT status, count(*)::int AS n FROM es_saga_instances WHERE saga_name = ${sagaName} GROUP BY status`.pipe(
        Effect.map((rows) => new Map(rows.map((r) => [r.status, r.n]))),
        refail("sagaCounts")
      ),
    list: (sagaName) =>
      sql<Row>`SELECT ${cols} FROM es_saga_instances WHERE saga_name = ${sagaName} ORDER BY created_at, instance_id`.pipe(
        Effect.map((rows) => rows.map(toInstance)),
        refail("sagaList")
      ),
    history: (sagaName, instanceId) =>
      sql<{ step: string; outcome: string; worker_id: string }>`
        SELECT step, outcome, worker_id FROM es_saga_history
        WHERE saga_name = ${sagaName} AND instance_id = ${instanceId} ORDER BY id`.pipe(
        Effect.map((rows) => rows.map((r) => ({ sagaName, instanceId, step: r.step, outcome: r.outcome, workerId: r.worker_id }))),
        refail("sagaHistory")
      ),
    notify: (sagaName) => sql`SELECT pg_notify(${channel}, ${sagaName})`.pipe(Effect.asVoid, refail("sagaNotify")),
    wakeups: listener.subscribe(channel)
  }
})

/**
 * The PostgreSQL `SagaStore` layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<SagaStoreTag, never, PgClient.PgClient> = Layer.effect(SagaStoreTag, make).pipe(
  Layer.provide(PgWakeups.layer)
)
