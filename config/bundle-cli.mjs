#!/usr/bin/env node
// Build step after `tsc`: re-emits the CLI's hot path as single ESM modules, in place in dist/.
//
// Why: on Node 20 every ESM module costs ~0.5-1 ms to resolve, load and link. A cached `token`
// walks ~20 small modules (config, store, envelope, ...), which is most of its overhead over a
// bare `node -e 0`. Bundling the static import graph of `dist/cli.js` and of the `token` command
// into one module each halves that (measured: `npm run bench -- token`).
//
// What stays separate, so nothing changes in behaviour:
// - every dynamic `import()` (the other commands, undici/jose/mqtt code paths): still loaded lazily,
//   from tsc's output, with the path rewritten relative to the bundle;
// - `errors.js`: one module instance, so `instanceof EdgeTokenError` holds across bundles;
// - npm packages (none is on the cached path anyway).
import { dirname, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const src = resolve(root, 'src')
const dist = resolve(root, 'dist')
const entries = ['cli.ts', 'cli/commands/token.ts']

/** Keeps dynamic imports and errors.js as imports of tsc's output, relative to the bundle. */
function lazyExternal(outfile) {
  return {
    name: 'lazy-external',
    setup(b) {
      b.onResolve({ filter: /.*/ }, (args) => {
        if (args.kind === 'entry-point' || !args.path.startsWith('.')) return undefined
        if (args.kind !== 'dynamic-import' && !/(^|\/)errors\.js$/.test(args.path)) return undefined
        const target = resolve(dist, relative(src, resolve(args.resolveDir, args.path)))
        let path = relative(dirname(outfile), target)
        if (!path.startsWith('.')) path = `./${path}`
        return { path, external: true }
      })
    },
  }
}

for (const entry of entries) {
  const outfile = resolve(dist, entry.replace(/\.ts$/, '.js'))
  await build({
    entryPoints: [resolve(src, entry)],
    outfile,
    allowOverwrite: true,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    legalComments: 'none',
    logLevel: 'warning',
    plugins: [lazyExternal(outfile)],
  })
}
