#!/usr/bin/env node
// Runs every test/bench/bench-*.mjs in turn. Benchmarks print figures; they never fail on a number.
// `npm run bench -- token` runs only the benchmarks whose name contains "token"; arguments after
// the filter go to each benchmark (`npm run bench -- soak --minutes 3`).
// The soak (bench-soak.mjs, 10 minutes by default) and the fleet simulation (bench-fleet.mjs, issue
// 17) run only when asked for by name: `-- soak`, `-- fleet`. `-- compare` is issue 17's side-by-side
// table (msal-node, openid-client), also written to test/bench/RESULTS.md.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

const dir = new URL('.', import.meta.url).pathname
const filter = process.argv[2] ?? ''
const passOn = process.argv.slice(3)
const LONG = ['bench-soak.mjs', 'bench-fleet.mjs']
const benches = readdirSync(dir)
  .filter((f) => /^bench-.+\.mjs$/.test(f) && f.includes(filter))
  .filter((f) => !LONG.includes(f) || f === `bench-${filter}.mjs`)
  .sort()
if (benches.length === 0) {
  console.error(`no benchmark matches '${filter}'`)
  process.exit(2)
}
let failed = 0
for (const file of benches) {
  console.log(`\n## ${file}`)
  const res = spawnSync(process.execPath, [join(dir, file), ...passOn], { stdio: 'inherit' })
  if (res.status !== 0) failed += 1
}
process.exit(failed === 0 ? 0 : 1)
