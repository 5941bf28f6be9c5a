import * as Layer from "effect/Layer"
import { projectionSuite } from "@mire/core/conformance"
import * as PgStore from "../src/PgStore.js"
import { pgRaw, pgReadModel } from "./raw.js"
import { migratedLayer } from "./utils.js"

projectionSuite(
  "postgres",
  Layer.mergeAll(pgReadModel, pgRaw).pipe(Layer.provideMerge(PgStore.layer), Layer.provideMerge(migratedLayer({ maxConnections: 40 })))
)
