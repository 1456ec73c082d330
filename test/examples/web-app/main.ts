/**
 * Runs the example web app (issue 18) from the environment:
 *
 * - `ISSUER`, `CLIENT_ID`, `CLIENT_SECRET`: the IdP and the app's registration (a confidential
 *   client with the redirect URI `<PUBLIC_URL>/auth/callback`);
 * - `SCOPES`: space-separated scopes the user signs in for and the API needs;
 * - `API_URL`: the protected API (`POST`, a telemetry batch);
 * - `PROMPT`: OpenID Connect `prompt` (`consent` where `offline_access` needs it);
 * - `PORT` (default 3000), `PUBLIC_URL` (default `http://127.0.0.1:<PORT>`);
 * - `REDIS_URL` and `TOKEN_CACHE_KEY` (32 bytes, base64url): share tokens and sessions with the
 *   app's other instances through Redis; without them, both stay in this process.
 *
 * Prints `listening <url>` on stdout when ready; SIGTERM closes it.
 *
 * @example
 * ```sh
 * ISSUER=https://login.example.com CLIENT_ID=web CLIENT_SECRET=… SCOPES=telemetry:write \
 *   API_URL=https://telemetry.example.com/ingest npx tsx test/examples/web-app/main.ts
 * ```
 * @packageDocumentation
 */
import { createServer } from 'node:http'
import { ConfidentialClient, MemoryTokenCache, RedisTokenCache, type TokenCache } from '../../../src/index.js'
import { createWebApp } from './app.js'
import { MemorySessionStore, RedisSessionStore, type SessionStore } from './sessions.js'

function required(name: string): string {
  const value = process.env[name]
  if (!value) {
    process.stderr.write(`web-app: set ${name}\n`)
    process.exit(2)
  }
  return value
}

const port = Number(process.env.PORT ?? 3000)
const publicUrl = process.env.PUBLIC_URL ?? `http://127.0.0.1:${port}`
const redisUrl = process.env.REDIS_URL

let cache: TokenCache & { close?: () => Promise<void> }
let sessions: SessionStore
if (redisUrl) {
  const key = required('TOKEN_CACHE_KEY')
  const redis = new RedisTokenCache({ url: redisUrl, key })
  // Early word of a wrong url or a Redis that is down; the app starts anyway and answers 503
  // until Redis is back (the cache reconnects by itself).
  await redis.connect().catch((err: Error) => process.stderr.write(`web-app: ${err.message}\n`))
  cache = redis
  sessions = new RedisSessionStore(redisUrl, key)
} else {
  cache = new MemoryTokenCache()
  sessions = new MemorySessionStore()
}

const client = new ConfidentialClient({
  authority: required('ISSUER'),
  clientId: required('CLIENT_ID'),
  credential: { clientSecret: required('CLIENT_SECRET') },
  cache,
})
const server = createServer(
  createWebApp({
    client,
    publicUrl,
    scopes: required('SCOPES').split(' ').filter(Boolean),
    apiUrl: required('API_URL'),
    sessions,
    prompt: process.env.PROMPT || undefined,
  }),
)
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${publicUrl}\n`))

process.once('SIGTERM', () => {
  server.close()
  server.closeAllConnections()
  // Closing waits for Redis replies; a Redis that is gone must not keep the process alive.
  setTimeout(() => process.exit(0), 2000).unref()
  void Promise.allSettled([cache.close?.(), sessions.close()]).then(() => process.exit(0))
})
