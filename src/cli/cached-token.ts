/**
 * The executable's answer to `edgetoken token` when the cached token is good enough: the same
 * steps as the command (./token-request.ts, the store's {@link cachedTokenResult}), run from the
 * small CommonJS bundle that `dist/cli.js` is, before any of the full CLI is loaded.
 *
 * Why: most calls of `token` find a valid token, and scripts call it often. A bare `node` starts in
 * ~25 ms here; loading the ESM module graph of the full CLI and creating the stdout stream cost
 * ~15 ms more, which this path does not pay (`npm run bench -- token`).
 *
 * It answers only when the full command would print this token and nothing else. In every other
 * case (another command, `--help`, `--force-refresh`, a refresh needed, a warning, any error) it
 * steps aside without a side effect the full command would not have, and the full CLI runs and
 * reports whatever it finds; so errors have one code path and this one can only be faster.
 */
import { cachedTokenResult } from '../store/cache.js'
import { parseCommandLine } from './command-line.js'
import { openTokenRequest, tokenLine } from './token-request.js'

/**
 * The cached answer to a command line, if it is `token` and the cached token is good enough.
 *
 * @param argv - the arguments after node and the script.
 * @param env - the environment.
 * @returns the line `token` would print (a secret: stdout only), or undefined to run the full CLI.
 *   Never rejects.
 */
export async function cachedTokenAnswer(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<string | undefined> {
  const line = parseCommandLine(argv, env)
  if (line.kind !== 'command' || line.name !== 'token') return undefined
  const { options } = line
  // --claims always asks the authorization server (a cached token is what the API refused).
  if (options.help === true || options['force-refresh'] === true || options.claims !== undefined)
    return undefined
  try {
    let warned = false
    const request = await openTokenRequest(options, env, () => {
      warned = true
    })
    // The full command prints the warning (once per process: this copy's record of it is separate).
    if (warned) return undefined
    const hit = cachedTokenResult(await request.store.read(), request)
    if (hit === undefined || hit.warning !== undefined) return undefined
    return tokenLine(hit, options.json === true)
  } catch {
    return undefined
  }
}
