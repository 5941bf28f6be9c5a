/**
 * A start or reset at a time or a position across an open transaction, on
 * PostgreSQL.
 */
import { startInFlightSuite } from "@mire/core/conformance"
import * as Layer from "effect/Layer"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer } from "./utils.js"

startInFlightSuite("postgres", PgStore.layer.pipe(Layer.provideMerge(migratedLayer({ maxConnections: 20 }))))
