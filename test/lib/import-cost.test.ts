// Issue 17: `import 'edgetoken'` must stay light. The runtime dependencies (undici 70-90 ms, jose
// ~20 ms, mqtt ~47 ms on Node 20 here) are loaded by the first request, id_token check or broker
// connection, never by the import. Asserted by the list of modules a fresh process loaded, not by
// time (the figure is `npm run bench -- compare`).
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { pathToFileURL } from 'node:url'

const root = new URL('../..', import.meta.url).pathname
/** The runtime dependencies none of which an import of the library may load. */
const HEAVY = ['undici', 'jose', 'mqtt', 'conf', 'qrcode-terminal', 'redis', '@redis/client']

// Records every module URL the ESM loader resolves (ES modules and CommonJS entries alike); the
// main process adds `require.cache` for CommonJS modules that other CommonJS modules required.
const HOOKS = `
import { appendFileSync } from 'node:fs'
let out
export function initialize(data) { out = data.out }
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context)
  appendFileSync(out, resolved.url + '\\n')
  return resolved
}
`

/**
 * Imports `entry` (a path, or a package specifier resolved from the repository root) in a fresh node process and lists the packages under node_modules it loaded.
 *
 * @param entry - the module to import (a path).
 * @param nodeArgs - extra node flags (tsx for TypeScript sources).
 * @returns the package names, and the module count.
 */
function packagesLoadedBy(
  entry: string,
  nodeArgs: string[] = [],
): { packages: Set<string>; modules: number; urls: string[] } {
  const work = mkdtempSync(join(tmpdir(), 'edgetoken-import-'))
  try {
    const out = join(work, 'resolved.txt')
    const hooks = `data:text/javascript,${encodeURIComponent(HOOKS)}`
    const main = `
      import { register, createRequire } from 'node:module'
      import { appendFileSync } from 'node:fs'
      register(${JSON.stringify(hooks)}, { data: { out: ${JSON.stringify(out)} } })
      const lib = await import(${JSON.stringify(entry.startsWith('/') ? pathToFileURL(entry).href : entry)})
      if (typeof lib.PublicClient !== 'function') throw new Error('not the library')
      const cjs = Object.keys(createRequire(import.meta.url).cache)
      appendFileSync(${JSON.stringify(out)}, cjs.map((f) => 'file://' + f + '\\n').join(''))
    `
    const r = spawnSync(process.execPath, [...nodeArgs, '--input-type=module', '-e', main], {
      cwd: root,
      encoding: 'utf8',
      env: { PATH: process.env.PATH, HOME: work },
    })
    assert.equal(r.status, 0, r.stderr)
    const urls = readFileSync(out, 'utf8').split('\n').filter(Boolean)
    const packages = new Set<string>()
    for (const url of urls) {
      const name = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1]
      if (name !== undefined) packages.add(name)
    }
    return { packages, modules: new Set(urls).size, urls: [...new Set(urls)] }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

function newestMtime(dir: string): number {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs)
  }
  return newest
}

test('issue 17 #1: importing the library (src/index.ts) loads no undici, jose, mqtt, conf, qrcode-terminal or redis', () => {
  const { packages, modules, urls } = packagesLoadedBy(join(root, 'src', 'index.ts'), ['--import', 'tsx'])
  const loaded = HEAVY.filter((name) => packages.has(name))
  assert.deepEqual(loaded, [], `import 'edgetoken' loaded ${loaded.join(', ')}: load it on first use`)
  // Built-ins that cost milliseconds of their own: the loopback listener's and the spool's.
  const builtins = ['node:http', 'node:zlib'].filter((name) => urls.includes(name))
  assert.deepEqual(builtins, [], `import 'edgetoken' loaded ${builtins.join(', ')}: load it on first use`)
  assert.ok(modules > 20, `the recorder saw ${modules} modules: it did not record the import`)
})

test('issue 17 #1: the built entry (dist/lib/index.js) loads none of them either', (t) => {
  const entry = join(root, 'dist', 'lib', 'index.js')
  let built = 0
  try {
    built = statSync(entry).mtimeMs
  } catch {
    t.skip('dist/lib/index.js is missing: npm run build')
    return
  }
  // A build older than the sources proves nothing about them (CI always builds first).
  if (!process.env.CI && built < newestMtime(join(root, 'src'))) {
    t.skip('dist/ is older than src/: npm run build')
    return
  }
  const { packages } = packagesLoadedBy(entry)
  assert.deepEqual(
    HEAVY.filter((name) => packages.has(name)),
    [],
  )
  // Each of them is still there when first used: the lazy path is wired, not removed.
  assert.ok(readFileSync(join(root, 'dist', 'lib', 'oauth', 'http.js'), 'utf8').includes("import('undici')"))
})

test('issue 17 #1: the package entry (import "edgetoken") is the code-split bundle: a few modules, no undici, jose, mqtt, conf or qrcode-terminal', (t) => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  // The types stay tsc's declarations; the code is esbuild's bundle of the same sources.
  assert.equal(pkg.exports['.'].import, './dist/bundle/index.js')
  assert.equal(pkg.main, './dist/bundle/index.js')
  assert.equal(pkg.exports['.'].types, './dist/lib/index.d.ts')
  const entry = join(root, 'dist', 'bundle', 'index.js')
  let built = 0
  try {
    built = statSync(entry).mtimeMs
  } catch {
    t.skip('dist/bundle/index.js is missing: npm run build')
    return
  }
  if (!process.env.CI && built < newestMtime(join(root, 'src'))) {
    t.skip('dist/ is older than src/: npm run build')
    return
  }
  // Imported by name, as a user would: the package resolves itself through "exports".
  const { packages, urls } = packagesLoadedBy('edgetoken')
  assert.deepEqual(
    HEAVY.filter((name) => packages.has(name)),
    [],
  )
  const ours = urls.filter((u) => u.startsWith(pathToFileURL(join(root, 'dist')).href))
  assert.ok(
    ours.every((u) => u.includes('/dist/bundle/')),
    `the package entry loaded tsc's modules: ${ours.filter((u) => !u.includes('/dist/bundle/')).join(' ')}`,
  )
  // tsc's output is ~100 modules; the bundle is its entry and the chunks shared with lazy paths.
  assert.ok(ours.length <= 20, `the package entry loaded ${ours.length} of our modules`)
  // The lazy paths are chunks of their own, still imported on first use.
  const chunks = readdirSync(join(root, 'dist', 'bundle', 'chunks'))
  assert.ok(
    chunks.some((f) => f.startsWith('http-agent-')),
    'the HTTP agent (undici) is a lazy chunk',
  )
})
