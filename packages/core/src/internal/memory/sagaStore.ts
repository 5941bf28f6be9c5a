/**
 * The in-memory `SagaStore`: instance rows, history and outbox in process,
 * written at commit of the ambient in-memory transaction; claims (a token
 * and an expiry per instance) are taken past skip-locked row locks, as on
 * Postgres. Time comes from Effect's `Clock`,
 * so `TestClock` drives timeouts.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Stream from "effect/Stream"
import type * as SagaStore from "../../SagaStore.js"
import * as Json from "../json.js"
import type * as Memory from "./eventStore.js"

const keyOf = (sagaName: string, instanceId: string) => `${sagaName}\u0000${instanceId}`

/** What Postgres keeps of a JSON value: the value after a jsonb round trip. */
const roundTrip = (value: unknown): unknown => (value === undefined ? value : Json.parseAsJsonb(JSON.stringify(value)))

const storedRow = (row: SagaStore.InstanceRow): SagaStore.InstanceRow => ({ ...row, state: roundTrip(row.state) })

/** What Postgres keeps of a message's (checked) payload text: `jsonb`'s parse of it. */
const storedPayload = (message: SagaStore.StorableMessage): SagaStore.OutboxMessage["payload"] => {
  const stored = Json.parseAsJsonb(message.payloadJson)
  return Json.isPlainObject(stored) ? stored : message.payload
}

const isDue = (row: SagaStore.InstanceRow, now: Date): boolean =>
  ((row.status === "running" || row.status === "compensating") && row.dueAt.getTime() <= now.getTime()) ||
  (row.status === "waiting" && row.deadline !== null && row.deadline.getTime() <= now.getTime())

/**
 * Builds the store over an in-memory event store's driver.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (mem: Memory.Driver): Effect.Effect<SagaStore.SagaStore> =>
  Effect.gen(function* () {
    const instances = new Map<string, SagaStore.InstanceRow>()
    const byCorrelation = new Map<string, string>()
    /** Live claims by instance key: the token and when it expires (ms). */
    const claims = new Map<string, { readonly token: string; readonly until: number }>()
    const history: Array<SagaStore.HistoryEntry> = []
    const outbox = new Map<string, { row: SagaStore.OutboxRow; published: boolean; nextAttemptAt: number }>()
    const wakeups = yield* PubSub.sliding<string>(256)
    let nextOutboxId = 1n

    const claim = (key: string, check: (row: SagaStore.InstanceRow) => boolean) =>
      Effect.flatMap(mem.tryLock(`saga:${key}`), (locked) =>
        Effect.sync(() => {
          const row = instances.get(key)
          return locked && row !== undefined && check(row) ? Option.some(row) : Option.none()
        })
      )

    const store: SagaStore.SagaStore = {
      insert: (row) => {
        const key = keyOf(row.sagaName, row.instanceId)
        return Effect.zipRight(
          mem.lock(`saga:${key}`),
          Effect.suspend(() => {
            if (instances.has(key)) return Effect.succeed(false)
            const stored = storedRow(row)
            return Effect.as(
              mem.onCommit(() => {
                if (!instances.has(key)) {
                  instances.set(key, stored)
                  byCorrelation.set(row.correlationId, key)
                }
              }),
              true
            )
          })
        )
      },
      claimDue: (sagaName, now, token, until) =>
        mem.transaction(
          Effect.gen(function* () {
            const claimable = (key: string, row: SagaStore.InstanceRow) =>
              row.sagaName === sagaName && isDue(row, now) && (claims.get(key)?.until ?? 0) <= now.getTime()
            const candidates = [...instances.entries()]
              .filter(([key, row]) => claimable(key, row))
              .sort(([, a], [, b]) => a.dueAt.getTime() - b.dueAt.getTime())
            for (const [key] of candidates) {
              const claimed = yield* claim(key, (row) => claimable(key, row))
              if (Option.isSome(claimed)) {
                yield* mem.onCommit(() => void claims.set(key, { token, until: until.getTime() }))
                return claimed
              }
            }
            return Option.none()
          })
        ),
      holdsClaim: (sagaName, instanceId, token, version) => {
        const key = keyOf(sagaName, instanceId)
        return Effect.zipRight(
          mem.lock(`saga:${key}`),
          Effect.sync(() => claims.get(key)?.token === token && instances.get(key)?.version === version)
        )
      },
      extendClaim: (sagaName, instanceId, token, until, failure) =>
        Effect.sync(() => {
          const key = keyOf(sagaName, instanceId)
          const row = instances.get(key)
          if (claims.get(key)?.token !== token || row === undefined) return false
          claims.set(key, { token, until: until.getTime() })
          if (failure !== undefined) instances.set(key, { ...row, attempts: failure.attempts, lastError: failure.lastError })
          return true
        }),
      claimWaiting: (correlationId) =>
        Effect.suspend(() => {
          const key = byCorrelation.get(correlationId)
          if (key === undefined) return Effect.succeed(Option.none())
          return Effect.zipRight(
            mem.lock(`saga:${key}`),
            Effect.sync(() => Option.filter(Option.fromNullable(instances.get(key)), (row) => row.status === "waiting"))
          )
        }),
      update: (row) =>
        Effect.suspend(() => {
          const stored = storedRow(row)
          return mem.onCommit(() => {
            const key = keyOf(row.sagaName, row.instanceId)
            instances.set(key, stored)
            claims.delete(key)
          })
        }),
      appendHistory: (entry) => mem.onCommit(() => void history.push(entry)),
      enqueue: (messages) =>
        Effect.suspend(() => {
          const stored = messages.map((message) => ({
            idempotencyKey: message.idempotencyKey,
            topic: message.topic,
            payload: storedPayload(message)
          }))
          return mem.onCommit(() => {
            for (const message of stored) {
              if (outbox.has(message.idempotencyKey)) continue
              outbox.set(message.idempotencyKey, {
                row: { ...message, id: nextOutboxId++, attempts: 0 },
                published: false,
                nextAttemptAt: 0
              })
            }
          })
        }),
      claimOutbox: (now, visibleAt, limit) =>
        Effect.sync(() => {
          const claimed: Array<SagaStore.OutboxRow> = []
          for (const entry of outbox.values()) {
            if (claimed.length >= limit) break
            if (entry.published || entry.nextAttemptAt > now.getTime()) continue
            entry.row = { ...entry.row, attempts: entry.row.attempts + 1 }
            entry.nextAttemptAt = visibleAt.getTime()
            claimed.push(entry.row)
          }
          return claimed
        }),
      markPublished: (id) =>
        Effect.sync(() => {
          for (const entry of outbox.values()) if (entry.row.id === id) entry.published = true
        }),
      markFailed: (id, retryAt) =>
        Effect.sync(() => {
          for (const entry of outbox.values()) if (entry.row.id === id) entry.nextAttemptAt = retryAt.getTime()
        }),
      outbox: Effect.sync(() => [...outbox.values()].map((e) => ({ ...e.row, published: e.published }))),
      counts: (sagaName) =>
        Effect.sync(() => {
          const counts = new Map<SagaStore.Status, number>()
          for (const row of instances.values()) {
            if (row.sagaName === sagaName) counts.set(row.status, (counts.get(row.status) ?? 0) + 1)
          }
          return counts
        }),
      list: (sagaName) => Effect.sync(() => [...instances.values()].filter((row) => row.sagaName === sagaName)),
      history: (sagaName, instanceId) =>
        Effect.sync(() => history.filter((h) => h.sagaName === sagaName && h.instanceId === instanceId)),
      notify: (sagaName) => mem.onCommit(() => void wakeups.unsafeOffer(sagaName)),
      wakeups: Stream.fromPubSub(wakeups)
    }
    return store
  })
