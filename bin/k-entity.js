#!/usr/bin/env node
// The `k-entity` command: the compiled CLI (src/cli/bin.ts, built to dist/ by npm run build).
import '../dist/cli/bin.js'
