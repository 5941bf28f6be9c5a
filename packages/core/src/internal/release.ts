/**
 * Letting go of a page a consumer is done with.
 *
 * @internal
 */

/**
 * Empties a batch's events array once its consumer is done with it (the
 * subscription made the array for that batch; nothing else holds it).
 *
 * V8's young-generation collector treats every pointer from an
 * old-generation object as a root, whether or not that object is still
 * alive. A batch passed through a `Stream` stage that runs an effect per
 * element stays reachable that way from dead objects of the stream's
 * machinery, so its events, with their data, survive scavenges until a
 * mark-compact: measured on a 100k catch-up through `Stream.runForEach`
 * over `Subscription.checkpointed`, 3.5 MB promoted per scavenge and
 * 250–270k events/s; with each batch's array emptied after its effect,
 * 0.07 MB and 300–375k (a plain `poll` loop: 0.11 MB, 310–390k). A heap
 * snapshot (which collects everything dead first) finds only the batch in
 * hand: the chain exists only for the young-generation collector.
 *
 * @internal
 */
export const releaseEvents = (events: ReadonlyArray<unknown>): void => {
  if (Array.isArray(events)) events.length = 0
}
