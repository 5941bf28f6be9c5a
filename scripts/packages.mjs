/** The publishable packages (folder names under packages/) and the workspace root. */
import { fileURLToPath } from "node:url"

export const root = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "")
export const packages = ["core", "pg", "cli"]
