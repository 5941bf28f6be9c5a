import * as Layer from "effect/Layer"
import * as InMemorySubscriptionStore from "../src/InMemorySubscriptionStore.js"
import {
  eventStoreSuite,
  holdBackRestartSuite,
  jsonLimitsSuite,
  jsonSuite,
  limits,
  projectionSuite,
  snapshotSuite,
  statusSuite,
  subscriptionSuite,
  transactionSuite
} from "@mire/core/conformance"
import * as InMemory from "../src/InMemory.js"
import { memoryLayer, memoryLayerWith, memoryRaw, memoryReadModel } from "./memoryRaw.js"

eventStoreSuite("in-memory", memoryLayer)
jsonSuite("in-memory", InMemorySubscriptionStore.layer.pipe(Layer.provideMerge(memoryLayer)))
jsonLimitsSuite("in-memory", memoryLayerWith(limits))
transactionSuite("in-memory", memoryLayer)
snapshotSuite("in-memory", memoryLayer)
subscriptionSuite("in-memory", InMemorySubscriptionStore.layer.pipe(Layer.provideMerge(memoryLayer)))
holdBackRestartSuite("in-memory", InMemorySubscriptionStore.layer.pipe(Layer.provideMerge(memoryLayer)))
statusSuite("in-memory", InMemorySubscriptionStore.layer.pipe(Layer.provideMerge(memoryLayer)))
projectionSuite("in-memory", Layer.mergeAll(memoryReadModel, memoryRaw).pipe(Layer.provideMerge(InMemory.layer)))
