/**
 * How runners spread units of work (a projection's subscription, or each
 * shard of a partitioned one) across the live workers: a pure decision,
 * taken by every worker from what it sees (the live workers and each unit's
 * lease), that says which free units it tries to acquire and which of its
 * own it hands over.
 *
 * Every worker computes the same target assignment from the same picture,
 * so they do not contend: a worker's fair share is `⌈units ÷ live
 * workers⌉`; each holder keeps up to its share of what it leads (the units
 * it ranks highest), and every other unit goes, in id order, to the live
 * worker with room that ranks it highest (rendezvous hashing of
 * `(unit, worker)`), so a joining worker receives a spread of units and a
 * departing worker's units scatter across the survivors. A unit left free
 * by two consecutive looks (its assignee failed it) is taken by any worker
 * below its share.
 *
 * The peers of a worker are only the workers that run the same set of
 * units ({@link unitsKey}): runners of other projections on the same
 * database (another service, a `SagaRunner`'s own runner) are not counted
 * in the share and are never assigned a unit they do not run; a unit one of
 * them holds reads as held.
 *
 * @since 0.2.0
 */
import type { LeaseStatus } from "./Lease.js"

/**
 * What a worker sees of one unit: its lease (none when never leased).
 *
 * @since 0.2.0
 * @category models
 */
export interface Unit {
  readonly id: string
  readonly lease: LeaseStatus | undefined
}

/**
 * The input of {@link decide}.
 *
 * @since 0.2.0
 * @category models
 */
export interface Picture {
  /** The deciding worker. */
  readonly me: string
  /** The store's time of the look, in epoch milliseconds. */
  readonly now: number
  /** The live peers (a recent heartbeat, the same {@link unitsKey}), `me` among them or not. */
  readonly workers: ReadonlyArray<string>
  /** The units `me` runs, with their leases. */
  readonly units: ReadonlyArray<Unit>
  /** The units `me` leads now (its running leaderships). */
  readonly leading: ReadonlySet<string>
  /** Units `me` will not lead (they failed here). */
  readonly excluded: ReadonlySet<string>
  /** Units that were free at `me`'s previous look. */
  readonly freeBefore: ReadonlySet<string>
}

/**
 * What a worker does after a look.
 *
 * @since 0.2.0
 * @category models
 */
export interface Decision {
  /** Free units to try to acquire, at most the deficit below the share. */
  readonly acquire: ReadonlyArray<string>
  /** Units `me` leads beyond its share: hand each over at its next batch boundary. */
  readonly handOver: ReadonlyArray<string>
  /** The share: `⌈units ÷ live workers⌉`. */
  readonly share: number
  /** The target holder of every unit (`null`: nobody yet, e.g. still leased by a dead worker). */
  readonly assignment: ReadonlyMap<string, string | null>
  /** The units free at this look (the next look's `freeBefore`). */
  readonly free: ReadonlySet<string>
}

/**
 * A 32-bit score of `(unit, worker)` for rendezvous hashing: FNV-1a over
 * both ids, then a murmur3 finaliser so that close ids score far apart.
 *
 * @since 0.2.0
 * @category hashing
 */
export const score = (unit: string, worker: string): number => {
  let h = 0x811c9dc5
  const text = `${unit}\u0000${worker}`
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** FNV-1a over `text` from `basis`, then the murmur3 finaliser: 32 bits. */
const hash32 = (text: string, basis: number): number => {
  let h = basis
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * The key of a set of units (order and duplicates aside): the count and 64
 * bits of hash of the sorted ids. Workers with one key are peers: they share
 * those units by their fair share; workers with another key run something
 * else and are left out of the share.
 *
 * @since 0.2.0
 * @category hashing
 */
export const unitsKey = (ids: Iterable<string>): string => {
  const sorted = Array.from(new Set(ids)).sort()
  const text = sorted.join("\u0000")
  const hex = (n: number) => n.toString(16).padStart(8, "0")
  return `${sorted.length}-${hex(hash32(text, 0x811c9dc5))}${hex(hash32(text, 0x01000193 ^ sorted.length))}`
}

/** Higher score first, ties by id. */
const byScore = (worker: string) => (a: string, b: string) => {
  const d = score(b, worker) - score(a, worker)
  return d !== 0 ? d : a < b ? -1 : a > b ? 1 : 0
}

/**
 * The live holder of a lease at `now`, if any.
 *
 * @since 0.2.0
 * @category decisions
 */
export const holderAt = (lease: LeaseStatus | undefined, now: number): string | null =>
  lease !== undefined && lease.workerId !== null && lease.leasedUntil.getTime() > now ? lease.workerId : null

/**
 * Whether a lease ran out without being released (its holder stopped
 * renewing: dead, paused or cut off). A released lease reads as the epoch.
 */
const lapsed = (lease: LeaseStatus | undefined, now: number): boolean =>
  lease !== undefined && lease.workerId !== null && lease.leasedUntil.getTime() > 0 && lease.leasedUntil.getTime() <= now

/**
 * The decision of one worker after one look (see the module's description).
 *
 * @example
 * ```ts
 * import { Rebalance } from "@mire/core"
 *
 * const units = ["p#0of4", "p#1of4", "p#2of4", "p#3of4"].map((id) => ({ id, lease: undefined }))
 * const decision = Rebalance.decide({
 *   me: "a",
 *   now: Date.now(),
 *   workers: ["a", "b"],
 *   units,
 *   leading: new Set(),
 *   excluded: new Set(),
 *   freeBefore: new Set()
 * })
 * assert.strictEqual(decision.share, 2)
 * assert.strictEqual(decision.acquire.length, 2) // and "b" acquires the other two
 * ```
 * @since 0.2.0
 * @category decisions
 */
export const decide = (picture: Picture): Decision => {
  const { me, now, units, leading, excluded, freeBefore } = picture
  // A worker whose lease lapsed stopped renewing: it is not counted, whatever its heartbeat says.
  const silent = new Set(units.flatMap((u) => (lapsed(u.lease, now) ? [u.lease!.workerId!] : [])))
  const live = Array.from(new Set([...picture.workers, me])).filter((w) => w === me || !silent.has(w)).sort()
  const share = units.length === 0 ? 0 : Math.ceil(units.length / live.length)
  const holder = new Map(units.map((u) => [u.id, holderAt(u.lease, now)] as const))
  const held = new Map<string, Array<string>>(live.map((w) => [w, []]))
  for (const u of units) {
    const h = holder.get(u.id)!
    held.get(h)?.push(u.id)
  }
  const assignment = new Map<string, string | null>()
  const room = new Map<string, number>()
  const open: Array<string> = []
  for (const [worker, ids] of held) {
    ids.sort(byScore(worker))
    ids.forEach((id, i) => {
      if (i < share) assignment.set(id, worker)
      else open.push(id)
    })
    room.set(worker, share - Math.min(ids.length, share))
  }
  for (const u of units) {
    const h = holder.get(u.id)!
    if (h === null) open.push(u.id)
    // Still leased by a worker not counted as live: nobody can take it before it lapses.
    else if (!held.has(h)) assignment.set(u.id, null)
  }
  open.sort()
  for (const id of open) {
    let best: string | null = null
    for (const w of live) {
      if (room.get(w)! > 0 && (best === null || score(id, w) > score(id, best))) best = w
    }
    assignment.set(id, best)
    if (best !== null) room.set(best, room.get(best)! - 1)
  }
  const free = new Set(units.flatMap((u) => (holder.get(u.id) === null ? [u.id] : [])))
  const mine = units.filter((u) => leading.has(u.id)).length
  const handOver = Array.from(leading)
    .filter((id) => holder.has(id) && assignment.get(id) !== me)
    .sort(byScore(me))
    .reverse()
    .slice(0, Math.max(0, mine - share))
  const keeping = mine - handOver.length
  const candidates = (ids: Iterable<string>) =>
    Array.from(ids).filter((id) => free.has(id) && !leading.has(id) && !excluded.has(id))
  const assigned = candidates(units.map((u) => u.id)).filter((id) => assignment.get(id) === me)
  const orphans = candidates(units.map((u) => u.id))
    .filter((id) => assignment.get(id) !== me && freeBefore.has(id))
    .sort(byScore(me))
  const acquire = [...assigned.sort(byScore(me)), ...orphans].slice(0, Math.max(0, share - keeping))
  return { acquire, handOver, share, assignment, free }
}
