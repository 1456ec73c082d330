#!/usr/bin/env node
// Build step after `tsc` (which writes the library, ES modules, to dist/lib): bundles the
// executable `src/cli.ts` and its cached `token` answer into one CommonJS file, dist/cli.js.
//
// Why: a cached `token` is what scripts call most, and on Node 20 its cost is mostly start-up.
// A CommonJS entry starts ~6 ms sooner than an ES module (no ESM loader), and one file instead of
// the ~20 small modules it reads (config, store, envelope, ...) saves their resolving and linking.
// Measured with `npm run bench -- token`.
//
// The package is `"type": "module"`, so two package.json files mark the formats:
// dist/package.json (commonjs, for dist/cli.js) and dist/lib/package.json (module).
// Every dynamic `import()` (the full CLI, the other commands, undici/jose/mqtt code paths) stays
// an import of tsc's output in dist/lib, its path rewritten relative to dist/cli.js; those run
// only when the cached answer steps aside, and then everything they load is one ESM copy.
//
// Then the library entry (`import 'edgetoken'`, package.json "exports"): `src/index.ts` bundled
// into ES modules with code splitting, dist/bundle/index.js plus dist/bundle/chunks/. Why: tsc's
// output is ~100 small modules, and an import pays for resolving, reading and linking each (issue
// 17: +96 ms vs openid-client's +28 ms loaded; bundled, about openid-client's). Code splitting keeps
// every dynamic `import()` a separate chunk loaded on first use (the HTTP agent and so undici, the
// file lock, DPoP and so jose), so the bundle loads no dependency at import either
// (test/lib/import-cost.test.ts). Packages stay external: one copy of undici/jose/mqtt, resolved
// from node_modules as before. The types are still tsc's, dist/lib/index.d.ts. A process that
// imports the package and runs dist/cli.js code would hold two copies of the library; none does
// (the CLI never imports the package entry).
import { readdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const src = resolve(root, 'src')
const dist = resolve(root, 'dist')
const lib = resolve(dist, 'lib')
const outfile = resolve(dist, 'cli.js')
const bundle = resolve(dist, 'bundle')

// Leftovers of older layouts (tsc used to write to dist/ itself) would shadow nothing but confuse.
for (const entry of readdirSync(dist)) {
  if (entry !== 'lib') rmSync(resolve(dist, entry), { recursive: true, force: true })
}

/** Keeps dynamic imports as imports of tsc's output in dist/lib, relative to the bundle. */
const lazyExternal = {
  name: 'lazy-external',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind !== 'dynamic-import' || !args.path.startsWith('.')) return undefined
      const target = resolve(lib, relative(src, resolve(args.resolveDir, args.path)))
      let path = relative(dirname(outfile), target)
      if (!path.startsWith('.')) path = `./${path}`
      return { path, external: true }
    })
  },
}

await build({
  entryPoints: [resolve(src, 'cli.ts')],
  outfile,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  legalComments: 'none',
  logLevel: 'warning',
  plugins: [lazyExternal],
})

await build({
  entryPoints: [resolve(src, 'index.ts')],
  outdir: bundle,
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  legalComments: 'none',
  logLevel: 'warning',
})
writeFileSync(resolve(dist, 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`)
writeFileSync(resolve(lib, 'package.json'), `${JSON.stringify({ type: 'module' })}\n`)
writeFileSync(resolve(bundle, 'package.json'), `${JSON.stringify({ type: 'module' })}\n`)
