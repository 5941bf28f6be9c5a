import * as Layer from "effect/Layer"
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
import * as SubscriptionStore from "../src/SubscriptionStore.js"
import { memoryLayer, memoryLayerWith, memoryRaw, memoryReadModel } from "./memoryRaw.js"

eventStoreSuite("in-memory", memoryLayer)
jsonSuite("in-memory", SubscriptionStore.layerMemory.pipe(Layer.provideMerge(memoryLayer)))
jsonLimitsSuite("in-memory", memoryLayerWith(limits))
transactionSuite("in-memory", memoryLayer)
snapshotSuite("in-memory", memoryLayer)
subscriptionSuite("in-memory", SubscriptionStore.layerMemory.pipe(Layer.provideMerge(memoryLayer)))
holdBackRestartSuite("in-memory", SubscriptionStore.layerMemory.pipe(Layer.provideMerge(memoryLayer)))
statusSuite("in-memory", SubscriptionStore.layerMemory.pipe(Layer.provideMerge(memoryLayer)))
projectionSuite("in-memory", Layer.mergeAll(memoryReadModel, memoryRaw).pipe(Layer.provideMerge(InMemory.layer)))
