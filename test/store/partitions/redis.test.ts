// Issue 18: RedisTokenCache against a real redis-server 7 (test/support/redis.ts): encryption at
// rest, compare-and-set under contention, TTLs, the index behind `list`, outages and slowness.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { pathToFileURL } from 'node:url'
import { createClient } from 'redis'
import { EdgeTokenError, StoreError } from '../../../src/errors.js'
import { RedisTokenCache } from '../../../src/store/partitions/redis.js'
import { appKey, type CachePartition, partitionKey } from '../../../src/store/partitions/token-cache.js'
import { freePort } from '../../support/net.js'
import { startRedis, type TestRedis } from '../../support/redis.js'

const root = new URL('../../..', import.meta.url).pathname
const PASSWORD = `pw-${randomBytes(9).toString('hex')}`
const KEY = randomBytes(32)
const KEY_TEXT = KEY.toString('base64url')
const APP = appKey('https://login.example.test/tenant', 'client-1')
const USER = 'alice@example.test'
/** The cache's timeoutMs where a test measures it; elsewhere a generous one (a loaded CI box). */
const TIMEOUT_MS = 400
const RELAXED_TIMEOUT_MS = 5000
/** Timers fire late on a loaded machine. */
const SLACK_MS = 500

/** Every secret of this file: none may appear in any error message. */
const secrets = new Set<string>([PASSWORD, KEY_TEXT, KEY.toString('hex')])
/** Every error the cache threw in this file, checked at the end. */
const thrown: Error[] = []

function partition(label: string, now = Date.now()): CachePartition {
  const refreshToken = `rt-${label}-${randomBytes(12).toString('hex')}`
  const token = `at-${label}-${randomBytes(12).toString('hex')}`
  secrets.add(refreshToken)
  secrets.add(token)
  return {
    v: 1,
    account: { id: `uid-${label}.utid`, issuer: 'https://login.example.test/tenant/v2.0', username: USER },
    refreshToken,
    accessTokens: [
      { key: 'api.read', scopes: ['api.read'], token, expiresAt: now + 3_600_000, obtainedAt: now },
    ],
    updatedAt: now,
  }
}

/** Runs `fn`, expecting an EdgeTokenError of `code`; records it for the no-secrets check. */
async function rejectsWith(fn: () => Promise<unknown>, code: string): Promise<EdgeTokenError> {
  try {
    await fn()
  } catch (err) {
    assert.ok(err instanceof EdgeTokenError, `not an EdgeTokenError: ${String(err)}`)
    assert.equal(err.code, code, err.message)
    thrown.push(err)
    return err
  }
  assert.fail(`expected ${code}`)
}

async function eventually<T>(fn: () => Promise<T>, withinMs = 5000): Promise<T> {
  const end = Date.now() + withinMs
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (Date.now() > end) throw err
      await new Promise((r) => setTimeout(r, 50))
    }
  }
}

let redis: TestRedis
const caches: RedisTokenCache[] = []
function cache(options: Partial<ConstructorParameters<typeof RedisTokenCache>[0]> = {}): RedisTokenCache {
  const c = new RedisTokenCache({ url: redis.url, key: KEY, timeoutMs: RELAXED_TIMEOUT_MS, ...options })
  caches.push(c)
  return c
}

before(async () => {
  redis = await startRedis({ password: PASSWORD })
})
after(async () => {
  for (const c of caches) await c.close()
  await redis.close()
  for (const err of thrown) {
    assert.doesNotMatch(err.message, /\n/)
    for (const s of secrets) assert.ok(!err.message.includes(s), `a secret in: ${err.message}`)
  }
})

describe('issue 18: RedisTokenCache (redis-server 7)', () => {
  test('issue 18 #1: put/get round trip, seen by another instance; list and delete keep the index', async () => {
    const a = cache()
    const b = cache()
    const key = partitionKey(APP, 'account', 'alice')
    const value = partition('alice')
    const version = await a.put(key, value)
    assert.equal(typeof version, 'string')
    const read = await b.get(key)
    assert.deepEqual(read?.value, value)
    assert.equal(read?.version, version)
    assert.equal(read?.stale, undefined)
    assert.deepEqual(await b.list(`${APP}/account/`), [key])
    await b.delete(key)
    // The delete itself leaves the index empty (not only a later list's pruning).
    assert.equal(await redis.command('EXISTS', `edgetoken:index:${APP}/account/`), '0')
    assert.equal(await a.get(key), undefined)
    assert.deepEqual(await a.list(`${APP}/account/`), [])
  })

  test('issue 18 #2: nothing Redis holds is plaintext (RDB bytes: no token, refresh token, account name or id)', async () => {
    const c = cache()
    const value = partition('bob')
    const key = partitionKey(APP, 'account', 'uid-bob.utid')
    await c.put(key, value, { expiresAt: Date.now() + 60_000 })
    const rdb = await redis.dump()
    const raw = await redis.command('GET', `edgetoken:${key}`)
    assert.ok(rdb.includes(Buffer.from(raw)), 'the RDB holds the value')
    const at = value.accessTokens[0]?.token ?? ''
    for (const plain of [
      value.refreshToken ?? '',
      at,
      USER,
      'uid-bob.utid',
      'api.read',
      'login.example.test',
    ]) {
      assert.ok(!rdb.includes(Buffer.from(plain)), `plaintext ${plain} in Redis`)
    }
    await c.delete(key)
  })

  test('issue 18 #3: a value copied to another key, tampered with, or read with another app key fails closed (ERR_STORE_UNREADABLE)', async () => {
    const c = cache()
    const alice = partitionKey(APP, 'account', 'alice')
    const mallory = partitionKey(APP, 'account', 'mallory')
    await c.put(alice, partition('alice'))
    // Moved: mallory's key now holds alice's value, byte for byte.
    assert.equal(await redis.command('COPY', `edgetoken:${alice}`, `edgetoken:${mallory}`), '1')
    const moved = await rejectsWith(() => cache().get(mallory), 'ERR_STORE_UNREADABLE')
    assert.ok(moved instanceof StoreError)
    // Another namespace (another app sharing the Redis) cannot read it either.
    assert.equal(await redis.command('COPY', `edgetoken:${alice}`, `other:${alice}`), '1')
    await rejectsWith(() => cache({ namespace: 'other:' }).get(alice), 'ERR_STORE_UNREADABLE')
    // Another app key.
    await rejectsWith(() => cache({ key: randomBytes(32) }).get(alice), 'ERR_STORE_UNREADABLE')
    // Tampered: one character of the ciphertext changed, the version kept. The instance that
    // wrote it must not answer from its own copy either.
    const raw = await redis.command('GET', `edgetoken:${alice}`)
    const at = raw.length - 5
    const flipped = raw.slice(0, at) + (raw[at] === 'A' ? 'B' : 'A') + raw.slice(at + 1)
    await redis.command('SET', `edgetoken:${alice}`, flipped)
    await rejectsWith(() => c.get(alice), 'ERR_STORE_UNREADABLE')
    await redis.command('SET', `edgetoken:${alice}`, 'not-a-value')
    await rejectsWith(() => c.get(alice), 'ERR_STORE_UNREADABLE')
    await redis.command('DEL', `edgetoken:${alice}`, `edgetoken:${mallory}`, `other:${alice}`)
  })

  test('issue 18 #4: compare-and-set under contention: two instances, 40 concurrent puts on one version, exactly one wins', async () => {
    const a = cache()
    const b = cache()
    const key = partitionKey(APP, 'account', 'carol')
    const first = await a.put(key, partition('carol'), { ifVersion: null })
    assert.equal(typeof first, 'string')
    // `null` means "must not exist": a second creation loses.
    assert.equal(await b.put(key, partition('carol'), { ifVersion: null }), undefined)
    const seen = await b.get(key)
    assert.equal(seen?.version, first)
    const attempts = Array.from({ length: 40 }, (_, i) => {
      const value = partition(`carol-${i}`)
      return (i % 2 ? a : b).put(key, value, { ifVersion: first }).then((v) => ({ v, value }))
    })
    const results = await Promise.all(attempts)
    const winners = results.filter((r) => r.v !== undefined)
    assert.equal(winners.length, 1)
    const now = await a.get(key)
    assert.equal(now?.version, winners[0]?.v)
    assert.deepEqual(now?.value, winners[0]?.value)
    // The losers' stale version no longer matches; unconditional puts always write.
    assert.equal(await b.put(key, partition('carol'), { ifVersion: first }), undefined)
    assert.equal(typeof (await b.put(key, partition('carol'))), 'string')
    // Concurrent creations: exactly one.
    const fresh = partitionKey(APP, 'account', 'dave')
    const creations = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 ? a : b).put(fresh, partition('dave'), { ifVersion: null }),
      ),
    )
    assert.equal(creations.filter((v) => v !== undefined).length, 1)
    await a.delete(key)
    await a.delete(fresh)
  })

  test("issue 18 #5: the key's expiry is expiresAt (PXAT); no expiresAt, no TTL", async () => {
    const c = cache()
    const key = partitionKey(APP, 'account', 'erin')
    const expiresAt = Date.now() + 90 * 86_400_000 + 0.4
    await c.put(key, partition('erin'), { expiresAt })
    assert.equal(Number(await redis.command('PEXPIRETIME', `edgetoken:${key}`)), Math.ceil(expiresAt))
    await c.put(key, partition('erin'))
    assert.equal(await redis.command('PTTL', `edgetoken:${key}`), '-1')
    // An instant already past: Redis drops the key at once.
    assert.equal(typeof (await c.put(key, partition('erin'), { expiresAt: Date.now() - 1000 })), 'string')
    assert.equal(await redis.command('EXISTS', `edgetoken:${key}`), '0')
    assert.equal(await c.get(key), undefined)
  })

  test('issue 18 #6: list returns only live keys of its prefix and prunes the index of expired ones', async () => {
    const c = cache()
    const prefix = `${APP}/obo/`
    const live = partitionKey(APP, 'obo', 'token-1')
    const gone = partitionKey(APP, 'obo', 'token-2')
    const other = partitionKey(APP, 'app', '')
    await c.put(live, partition('obo1'), { expiresAt: Date.now() + 60_000 })
    await c.put(gone, partition('obo2'), { expiresAt: Date.now() + 60_000 })
    await c.put(other, partition('app'))
    // Expire one key the way Redis does.
    await redis.command('PEXPIRE', `edgetoken:${gone}`, '1')
    await eventually(async () => assert.equal(await redis.command('EXISTS', `edgetoken:${gone}`), '0'))
    assert.equal(await redis.command('SISMEMBER', `edgetoken:index:${prefix}`, gone), '1')
    assert.deepEqual(await c.list(prefix), [live])
    assert.equal(await redis.command('SISMEMBER', `edgetoken:index:${prefix}`, gone), '0')
    assert.deepEqual(await c.list(`${APP}/app/`), [other])
    assert.deepEqual(await c.list(`${APP}/account/`), [])
    await c.delete(live)
    await c.delete(other)
  })

  test('issue 18 #7: Redis stopped mid-run: put/delete/list fail fast with ERR_CACHE_UNAVAILABLE, get serves the local copy as stale; back when Redis is', async () => {
    const c = cache()
    const seen = partitionKey(APP, 'account', 'frank')
    const written = partitionKey(APP, 'account', 'grace')
    const unseen = partitionKey(APP, 'account', 'heidi')
    await c.put(written, partition('grace'))
    await cache().put(seen, partition('frank'))
    await cache().put(unseen, partition('heidi'))
    const read = await c.get(seen)
    assert.ok(read)
    await redis.stop()
    try {
      for (const op of [
        () => c.put(written, partition('grace')),
        () => c.delete(unseen),
        () => c.list(`${APP}/account/`),
        () => c.get(unseen),
      ]) {
        const started = performance.now()
        const err = await rejectsWith(op, 'ERR_CACHE_UNAVAILABLE')
        // Fails at once (no offline queue), well within timeoutMs.
        assert.ok(performance.now() - started < RELAXED_TIMEOUT_MS / 5, 'fails fast')
        assert.match(
          err.message,
          new RegExp(`^token cache redis://127\\.0\\.0\\.1:${redis.port} cannot be reached \\(`),
        )
      }
      const stale = await c.get(seen)
      assert.deepEqual(stale?.value, read.value)
      assert.equal(stale?.version, read.version)
      assert.ok(stale?.stale instanceof EdgeTokenError && stale.stale.code === 'ERR_CACHE_UNAVAILABLE')
      thrown.push(stale.stale)
      // What this process wrote is a local copy too.
      assert.ok((await c.get(written))?.stale)
      // A failed delete still forgets the copy: a signed-out user is not served during the outage.
      await rejectsWith(() => c.delete(written), 'ERR_CACHE_UNAVAILABLE')
      await rejectsWith(() => c.get(written), 'ERR_CACHE_UNAVAILABLE')
    } finally {
      await redis.start()
    }
    const version = await eventually(() => c.put(seen, partition('frank')))
    assert.equal(typeof version, 'string')
    const back = await c.get(seen)
    assert.equal(back?.stale, undefined)
    assert.equal(back?.version, version)
  })

  test('issue 18 #8: a Redis that does not answer (SIGSTOP): every operation ends within timeoutMs; get serves the local copy', async () => {
    const c = cache({ timeoutMs: TIMEOUT_MS })
    const key = partitionKey(APP, 'account', 'ivan')
    await eventually(() => c.connect())
    await eventually(() => c.put(key, partition('ivan')))
    redis.pause()
    try {
      for (const op of [() => c.put(key, partition('ivan')), () => c.list(`${APP}/account/`)]) {
        const started = performance.now()
        const err = await rejectsWith(op, 'ERR_CACHE_UNAVAILABLE')
        const took = performance.now() - started
        assert.ok(took >= TIMEOUT_MS - 5 && took < TIMEOUT_MS + SLACK_MS, `took ${took} ms`)
        assert.match(err.message, new RegExp(`did not answer within ${TIMEOUT_MS} ms`))
      }
      const stale = await c.get(key)
      assert.ok(stale?.stale)
    } finally {
      redis.resume()
    }
    assert.equal((await eventually(() => c.get(key)))?.stale, undefined)
  })

  test('issue 18 #9: Redis down at first use: connect() fails within timeoutMs naming the errno, later calls fail fast, then it connects', async () => {
    const port = await freePort()
    const c = cache({ url: `redis://:${PASSWORD}@127.0.0.1:${port}`, timeoutMs: TIMEOUT_MS })
    let started = performance.now()
    const err = await rejectsWith(() => c.connect(), 'ERR_CACHE_UNAVAILABLE')
    assert.ok(performance.now() - started < TIMEOUT_MS + SLACK_MS)
    assert.match(
      err.message,
      new RegExp(`redis://127\\.0\\.0\\.1:${port} cannot be reached \\(ECONNREFUSED\\)`),
    )
    started = performance.now()
    await rejectsWith(() => c.get(partitionKey(APP, 'account', 'x')), 'ERR_CACHE_UNAVAILABLE')
    assert.ok(
      performance.now() - started < TIMEOUT_MS / 2,
      'fails fast once the first connection was waited for',
    )
    const late = await startRedis({ port, password: PASSWORD })
    try {
      await eventually(() => c.connect())
      assert.equal(await c.get(partitionKey(APP, 'account', 'x')), undefined)
    } finally {
      await c.close()
      await late.close()
    }
  })

  test('issue 18 #10: wrong password: ERR_CACHE_UNAVAILABLE naming the refusal, never the password', async () => {
    const wrong = `wrong-${randomBytes(6).toString('hex')}`
    secrets.add(wrong)
    const c = cache({ url: `redis://:${wrong}@127.0.0.1:${redis.port}`, timeoutMs: TIMEOUT_MS })
    // The refusal is known once the AUTH reply came back (at once here; later on a loaded machine).
    await eventually(async () => {
      const err = await rejectsWith(() => c.get(partitionKey(APP, 'account', 'x')), 'ERR_CACHE_UNAVAILABLE')
      assert.match(err.message, /refused the command \((WRONGPASS|NOAUTH)\)/)
    })
  })

  test("issue 18 #11: an app's own node-redis client is used as given and left open by close()", async () => {
    const client = createClient({ url: redis.url, disableOfflineQueue: true })
    client.on('error', () => {})
    const c = new RedisTokenCache({
      client,
      key: KEY_TEXT,
      namespace: 'app2:',
      timeoutMs: RELAXED_TIMEOUT_MS,
    })
    const key = partitionKey(APP, 'app', '')
    const value = partition('app2')
    assert.equal(typeof (await c.put(key, value)), 'string')
    assert.deepEqual((await c.get(key))?.value, value)
    assert.equal(await client.exists(`app2:${key}`), 1)
    await c.close()
    assert.ok(client.isReady)
    await rejectsWith(() => c.get(key), 'ERR_CACHE_UNAVAILABLE')
    await client.del(`app2:${key}`)
    await client.close()
  })

  test('issue 18 #12: options are checked up front (ConfigError), without echoing the url credentials', () => {
    const bad: ConstructorParameters<typeof RedisTokenCache>[0][] = [
      { key: KEY },
      { key: KEY, url: redis.url, client: createClient() },
      { key: randomBytes(16), url: redis.url },
      { key: KEY, url: `http://:${PASSWORD}@127.0.0.1:1` },
      { key: KEY, url: redis.url, timeoutMs: 0 },
      { key: KEY, url: redis.url, localCopies: -1 },
    ]
    for (const options of bad) {
      assert.throws(
        () => new RedisTokenCache(options),
        (err: unknown) => {
          assert.ok(err instanceof EdgeTokenError && err.code === 'ERR_CONFIG')
          thrown.push(err)
          return true
        },
      )
    }
  })

  test('issue 18 #13: the redis package is loaded on first use, not when the cache module is imported or constructed', () => {
    // node-redis is CommonJS: whatever of it is loaded shows in require.cache.
    const main = `
      import { createRequire } from 'node:module'
      const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((f) => /node_modules\\/(redis|@redis)\\//.test(f))
      const { RedisTokenCache } = await import(${JSON.stringify(pathToFileURL(`${root}src/store/partitions/redis.ts`).href)})
      const c = new RedisTokenCache({ url: ${JSON.stringify(redis.url)}, key: ${JSON.stringify(KEY_TEXT)}, timeoutMs: 10000 })
      const before = loaded()
      await c.connect()
      const afterConnect = loaded()
      await c.close()
      console.log(JSON.stringify({ before, afterConnect }))
    `
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', main], {
      cwd: root,
      encoding: 'utf8',
    })
    assert.equal(r.status, 0, r.stderr)
    assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').at(-1) ?? ''), {
      before: false,
      afterConnect: true,
    })
  })
})
