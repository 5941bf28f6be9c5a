import * as InMemory from "../src/InMemory.js"
import { catchUpSuite } from "./conformance/catchUpSuite.js"

catchUpSuite("in-memory", InMemory.layer)
