/**
 * A start or reset at a time or a position across an open transaction, on
 * the in-memory store.
 */
import { startInFlightSuite } from "@mire/core/conformance"
import * as InMemory from "../src/InMemory.js"

startInFlightSuite("in-memory", InMemory.layer)
