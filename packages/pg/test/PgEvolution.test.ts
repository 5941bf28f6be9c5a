import * as Layer from "effect/Layer"
import { evolutionSuite } from "@mire/core/conformance"
import * as PgStore from "../src/PgStore.js"
import { pgRaw, pgReadModel } from "./raw.js"
import { migratedLayer } from "./utils.js"

evolutionSuite(
  "postgres",
  Layer.mergeAll(pgRaw, pgReadModel).pipe(Layer.provideMerge(PgStore.layer), Layer.provideMerge(migratedLayer()))
)
