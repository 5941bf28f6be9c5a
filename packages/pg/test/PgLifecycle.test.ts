import { lifecycleProjectionSuite, lifecycleSuite } from "@mire/core/conformance"
import * as Layer from "effect/Layer"
import * as PgStore from "../src/PgStore.js"
import * as PgSubscriptionStore from "../src/PgSubscriptionStore.js"
import { migratedLayer, storeLayer } from "./utils.js"

lifecycleSuite("postgres", PgSubscriptionStore.layer.pipe(Layer.provideMerge(storeLayer())))
lifecycleProjectionSuite("postgres", PgStore.layer.pipe(Layer.provideMerge(migratedLayer())))
