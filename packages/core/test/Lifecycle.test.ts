import * as Layer from "effect/Layer"
import { lifecycleProjectionSuite, lifecycleSuite } from "@mire/core/conformance"
import * as EventStore from "../src/EventStore.js"
import * as InMemory from "../src/InMemory.js"
import * as SubscriptionStore from "../src/SubscriptionStore.js"

lifecycleSuite("in-memory", SubscriptionStore.layerMemory.pipe(Layer.provideMerge(EventStore.layerMemory)))
lifecycleProjectionSuite("in-memory", InMemory.layer)
