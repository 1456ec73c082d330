#!/usr/bin/env node
// Runs the whole test suite: the firmware's host-side Python tests first, then every
// test/**/*.test.ts through node:test + tsx. Node 20's --test does not expand globs, so the
// file list is built here. Extra arguments are passed to node (e.g. a file list to run a subset).
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join, relative } from 'node:path'

const root = new URL('..', import.meta.url).pathname

function walk(dir) {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name)
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : walk(p)
    return e.name.endsWith('.test.ts') ? [relative(root, p)] : []
  })
}

const args = process.argv.slice(2)
const files = args.length > 0 ? args : walk(join(root, 'test')).sort()

const firmwareTests = join(root, 'firmware-bridge', 'firmware', 'tests')
if (args.length === 0 && existsSync(firmwareTests)) {
  const py = spawnSync(
    'python3',
    ['-m', 'unittest', 'discover', '-s', firmwareTests, '-t', join(root, 'firmware-bridge', 'firmware')],
    {
      stdio: 'inherit',
      cwd: root,
    },
  )
  if (py.status !== 0) process.exit(py.status ?? 1)
}

const res = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=3', '--test-timeout=240000', ...files],
  { stdio: 'inherit', cwd: root, env: { ...process.env, EDGETOKEN_TEST: '1' } },
)
process.exit(res.status ?? 1)
