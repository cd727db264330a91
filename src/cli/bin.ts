#!/usr/bin/env node
// The `k-entity` command (package.json "bin" runs it through bin/k-entity.js).
import { main } from './main.ts'

const code = await main(process.argv.slice(2))
process.exitCode = code
// A driver's socket or timer left behind must not keep a finished command alive.
setTimeout(() => process.exit(code), 1000).unref()
