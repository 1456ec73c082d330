import assert from 'node:assert/strict'
import {
  chmodSync,
  existsSync,
  lchownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { ConfigError, EdgeTokenError, StoreError } from '../../src/errors.js'
import { emptyDocument, type StoreDocument } from '../../src/store/document.js'
import { LOCK_FILE, openTokenStore, STORE_FILE, tokenStoreExists } from '../../src/store/token-store.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-store-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0
const stateDir = () => join(root, `s${n++}`, 'state')

const RT = 'refresh-token-secret-0123456789'
const AT = 'access-token-secret-9876543210'

function doc(): StoreDocument {
  return {
    v: 1,
    accounts: {
      k: {
        authority: 'https://idp.test',
        clientId: 'c',
        account: { id: 'u1', issuer: 'https://idp.test', username: 'alice' },
        refreshToken: RT,
        needsSignIn: false,
        scopes: ['openid', 'offline_access'],
        accessTokens: [
          { key: '', scopes: [], token: AT, expiresAt: Date.now() + 3600_000, obtainedAt: Date.now() },
        ],
        updatedAt: Date.now(),
      },
    },
  }
}

describe('token store file', () => {
  test('creates the state dir 0700 and the store 0600, encrypted', async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    assert.equal(statSync(dir).mode & 0o777, 0o700)
    assert.deepEqual(await store.read(), emptyDocument())
    assert.equal(tokenStoreExists(dir), false)
    await store.withLock(() => store.write(doc()))
    assert.equal(tokenStoreExists(dir), true)
    assert.equal(statSync(join(dir, STORE_FILE)).mode & 0o777, 0o600)
    const raw = readFileSync(join(dir, STORE_FILE))
    assert.ok(
      !raw.includes(RT) && !raw.includes(AT) && !raw.includes('alice'),
      'the store file holds no plaintext',
    )
    assert.equal((await store.read()).accounts.k?.refreshToken, RT)
    // A second process (another store instance) reads the same file with the same key.
    const again = await openTokenStore({ stateDir: dir, env: {} })
    assert.equal((await again.read()).accounts.k?.refreshToken, RT)
    assert.deepEqual(readdirSync(dir).sort(), ['store.key', 'tokens.store'].sort())
  })

  test('creates a missing state directory with mode 0700 whatever the umask', async () => {
    const dir = stateDir()
    const previous = process.umask(0o002)
    try {
      await openTokenStore({ stateDir: dir, env: {} })
    } finally {
      process.umask(previous)
    }
    assert.equal(statSync(dir).mode & 0o7777, 0o700)
  })

  test('never changes an existing state directory (a home directory stays 0755)', async () => {
    const dir = stateDir()
    mkdirSync(dir, { recursive: true })
    chmodSync(dir, 0o755)
    await openTokenStore({ stateDir: dir, env: {} })
    assert.equal(statSync(dir).mode & 0o7777, 0o755)
  })

  test('refuses a shared (1777) state directory with a config error and leaves its mode alone', async () => {
    const dir = stateDir()
    mkdirSync(dir, { recursive: true })
    chmodSync(dir, 0o1777)
    await assert.rejects(
      openTokenStore({ stateDir: dir, env: {} }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.code === 'ERR_CONFIG' &&
        err.message ===
          `state directory ${dir} is writable by others (mode 1777); use a private subdirectory (e.g. ${dir}/edgetoken)`,
    )
    assert.equal(statSync(dir).mode & 0o7777, 0o1777, 'the sticky bit is kept')
    assert.deepEqual(readdirSync(dir), [], 'nothing was created in it')
    // The suggested subdirectory is accepted.
    await openTokenStore({ stateDir: join(dir, 'edgetoken'), env: {} })
  })

  test('refuses a group-writable state directory', async () => {
    const dir = stateDir()
    mkdirSync(dir, { recursive: true })
    chmodSync(dir, 0o770)
    await assert.rejects(openTokenStore({ stateDir: dir, env: {} }), ConfigError)
    assert.equal(statSync(dir).mode & 0o7777, 0o770)
  })

  test('refuses a state directory that is a symbolic link someone other than root made', async () => {
    const target = stateDir()
    mkdirSync(target, { recursive: true, mode: 0o700 })
    const link = `${target}-link`
    symlinkSync(target, link)
    const uid = process.getuid?.() ?? 0
    // As root, hand the link to another user (an attacker's link); otherwise it is already ours.
    if (uid === 0) lchownSync(link, 65534, 65534)
    await assert.rejects(
      openTokenStore({ stateDir: link, env: {} }),
      (err: unknown) =>
        err instanceof ConfigError && / is a symbolic link; use a private subdirectory/.test(err.message),
    )
    assert.deepEqual(readdirSync(target), [])
  })

  test('follows a root-owned link to a private directory (systemd StateDirectory= with DynamicUser=yes)', {
    skip: process.getuid?.() !== 0 && 'only root makes root-owned links',
  }, async () => {
    const target = stateDir()
    mkdirSync(target, { recursive: true, mode: 0o700 })
    const link = `${target}-root-link`
    symlinkSync(target, link)
    const store = await openTokenStore({ stateDir: link, env: {} })
    await store.withLock(() => store.write(doc()))
    assert.equal(existsSync(join(target, STORE_FILE)), true)
  })

  test('refuses a state directory of another user', { skip: process.getuid?.() !== 0 }, async () => {
    const dir = stateDir()
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    chmodSync(dir, 0o700)
    const { chownSync } = await import('node:fs')
    chownSync(dir, 65534, 65534)
    await assert.rejects(
      openTokenStore({ stateDir: dir, env: {} }),
      (err: unknown) =>
        err instanceof ConfigError && /belongs to another user \(uid 65534\)/.test(err.message),
    )
  })

  test('refuses a state directory that is a file, as a config error', async () => {
    const dir = stateDir()
    mkdirSync(join(dir, '..'), { recursive: true })
    writeFileSync(dir, 'x')
    await assert.rejects(openTokenStore({ stateDir: dir, env: {} }), ConfigError)
  })

  test('an unreadable store file is ERR_STORE_UNREADABLE naming the file and errno', {
    skip: process.getuid?.() === 0 && 'root reads any file',
  }, async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    await store.withLock(() => store.write(doc()))
    const path = join(dir, STORE_FILE)
    chmodSync(path, 0o000)
    try {
      await assert.rejects(
        store.read(),
        (err: unknown) =>
          err instanceof StoreError &&
          err.code === 'ERR_STORE_UNREADABLE' &&
          err.category === 'store' &&
          err.message === `token store ${path} cannot be read (EACCES)`,
      )
    } finally {
      chmodSync(path, 0o600)
    }
  })

  test('an unusable state directory (not writable) is ERR_STORE_UNREADABLE, not an internal error', {
    skip: process.getuid?.() === 0 && 'root writes anywhere',
  }, async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    chmodSync(dir, 0o500)
    try {
      await assert.rejects(
        store.withLock(() => store.write(doc())),
        (err: unknown) =>
          err instanceof StoreError &&
          err.code === 'ERR_STORE_UNREADABLE' &&
          err.message === `token store lock ${join(dir, LOCK_FILE)} cannot be created (EACCES)`,
      )
    } finally {
      chmodSync(dir, 0o700)
    }
  })

  test('issue 20: a store path that is a directory (EISDIR, root gets it too) is ERR_STORE_UNREADABLE naming the file and errno', async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    const path = join(dir, STORE_FILE)
    mkdirSync(path)
    const unreadable = (err: unknown) =>
      err instanceof StoreError &&
      err.code === 'ERR_STORE_UNREADABLE' &&
      err.category === 'store' &&
      err.message === `token store ${path} cannot be read (EISDIR)`
    await assert.rejects(store.read(), unreadable)
    // A write reads first: the directory is never replaced.
    await assert.rejects(
      store.withLock(() => store.write(doc())),
      unreadable,
    )
    assert.equal(statSync(path).isDirectory(), true)
  })

  test('issue 20: a state directory gone unusable under the store (ENOTDIR, root gets it too) is ERR_STORE_UNREADABLE, not an internal error', async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    // Replaced by a file after the open: nothing can be created in it, whoever runs.
    rmSync(dir, { recursive: true })
    writeFileSync(dir, '')
    await assert.rejects(
      store.withLock(() => store.write(doc())),
      (err: unknown) =>
        err instanceof StoreError &&
        err.code === 'ERR_STORE_UNREADABLE' &&
        err.message === `token store lock ${join(dir, LOCK_FILE)} cannot be created (ENOTDIR)`,
    )
  })

  test('sweeps leftovers of killed writers at open: old store and metadata temporaries, key copies', async () => {
    const dir = stateDir()
    await openTokenStore({ stateDir: dir, env: {} })
    const old = new Date(Date.now() - 120_000)
    const leftovers = [`${STORE_FILE}.tmp-1-aa`, 'metadata.json.tmp-1-bb', 'store.key.tmp-1-cc']
    for (const name of leftovers) writeFileSync(join(dir, name), 'x')
    // Fresh ones: a live writer's store or metadata temporary stays; a key copy goes once the key exists.
    writeFileSync(join(dir, `${STORE_FILE}.tmp-2-dd`), 'x')
    writeFileSync(join(dir, 'store.key.tmp-2-ee'), 'x')
    for (const name of leftovers) utimesSync(join(dir, name), old, old)
    await openTokenStore({ stateDir: dir, env: {} })
    assert.deepEqual(
      readdirSync(dir)
        .filter((f) => f.includes('.tmp-'))
        .sort(),
      [`${STORE_FILE}.tmp-2-dd`],
    )
  })

  test('a fresh key copy is left to its writer while no key exists yet, an old one is swept', async () => {
    const dir = stateDir()
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    writeFileSync(join(dir, 'store.key.tmp-9-fresh'), 'x')
    writeFileSync(join(dir, 'store.key.tmp-9-old'), 'x')
    const old = new Date(Date.now() - 60_000)
    utimesSync(join(dir, 'store.key.tmp-9-old'), old, old)
    const { sweepKeyTemporaries } = await import('../../src/store/keys.js')
    sweepKeyTemporaries(dir)
    assert.deepEqual(readdirSync(dir), ['store.key.tmp-9-fresh'])
    assert.equal(existsSync(join(dir, 'store.key')), false)
  })

  test('sweeps temporary files of interrupted writes before writing', async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    writeFileSync(join(dir, `${STORE_FILE}.tmp-12345678901abcdef`), 'partial')
    writeFileSync(join(dir, 'tokens.lock.tmp-deadbeef'), '{}')
    await store.withLock(() => store.write(doc()))
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('.tmp-')),
      [],
    )
  })

  test('refuses to read or overwrite a tampered store', async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    await store.withLock(() => store.write(doc()))
    const path = join(dir, STORE_FILE)
    const env = JSON.parse(readFileSync(path, 'utf8'))
    const ct = Buffer.from(env.ct, 'base64url')
    ct[0] = (ct[0] ?? 0) ^ 1
    env.ct = ct.toString('base64url')
    const tampered = JSON.stringify(env)
    writeFileSync(path, tampered)
    await assert.rejects(
      store.read(),
      (err: unknown) => err instanceof StoreError && err.code === 'ERR_STORE_UNREADABLE',
    )
    // Writing authenticates the current file first: a damaged store is never replaced silently.
    const fresh = await openTokenStore({ stateDir: dir, env: {} })
    await assert.rejects(
      fresh.withLock(() => fresh.write(emptyDocument())),
      (err: unknown) => err instanceof StoreError,
    )
    assert.equal(readFileSync(path, 'utf8'), tampered, 'never reset silently')
  })

  test('a plaintext store is refused, not used', async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    writeFileSync(join(dir, STORE_FILE), JSON.stringify(doc()))
    await assert.rejects(store.read(), /not an encrypted edgetoken store/)
  })

  test('a document of the wrong shape is refused before it is written', async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {} })
    const bad = doc() as unknown as { accounts: { k: { needsSignIn: unknown } } }
    bad.accounts.k.needsSignIn = 'yes'
    await assert.rejects(store.withLock(() => store.write(bad as unknown as StoreDocument)))
    assert.equal(tokenStoreExists(dir), false)
  })

  test('waiting for the store lock gives up with a store error naming the holder, or stops on the signal', async () => {
    const dir = stateDir()
    const store = await openTokenStore({ stateDir: dir, env: {}, lockTimeoutMs: 200 })
    const { acquireFileLock } = await import('../../src/lib/fs/file-lock.js')
    const held = await acquireFileLock(join(dir, LOCK_FILE), { what: 'token store' })
    await assert.rejects(
      store.withLock(async () => {}),
      (err: unknown) =>
        err instanceof StoreError &&
        err.code === 'ERR_UNAVAILABLE' &&
        err.category === 'unavailable' &&
        err.message === `token store is locked by process ${process.pid}; gave up waiting`,
    )
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 100)
    const patient = await openTokenStore({ stateDir: dir, env: {} })
    await assert.rejects(
      patient.withLock(async () => {}, { signal: controller.signal }),
      (err: unknown) => err instanceof EdgeTokenError && err.code === 'ERR_CANCELLED',
    )
    await held.release()
    assert.equal(await store.withLock(async () => 'ran'), 'ran')
  })

  test('the machine id is taken from EDGETOKEN_MACHINE_ID_FILE', async () => {
    const dir = stateDir()
    mkdirSync(join(dir, '..'), { recursive: true })
    const mid = join(dir, '..', 'machine-id')
    writeFileSync(mid, 'aaaa\n')
    const store = await openTokenStore({ stateDir: dir, env: { EDGETOKEN_MACHINE_ID_FILE: mid } })
    await store.withLock(() => store.write(doc()))
    writeFileSync(mid, 'bbbb\n')
    const moved = await openTokenStore({ stateDir: dir, env: { EDGETOKEN_MACHINE_ID_FILE: mid } })
    await assert.rejects(moved.read(), /belongs to another machine/)
  })
})

test('writing the store leaves signal handling alone (one SIGTERM is one signal)', async () => {
  // conf's dependency when-exit re-raised SIGTERM after any write, which the CLI reads as a second
  // Ctrl-C ("exit now"): the reason the store does its own durable write.
  const dir = stateDir()
  const script = join(root, 'signal-probe.mts')
  const storeModule = new URL('../../src/store/token-store.ts', import.meta.url).href
  const docModule = new URL('../../src/store/document.ts', import.meta.url).href
  writeFileSync(
    script,
    `import { openTokenStore } from ${JSON.stringify(storeModule)}
import { emptyDocument } from ${JSON.stringify(docModule)}
let seen = 0
process.on('SIGTERM', () => { seen += 1 })
const store = await openTokenStore({ stateDir: ${JSON.stringify(dir)}, env: {} })
await store.withLock(() => store.write(emptyDocument()))
process.kill(process.pid, 'SIGTERM')
setTimeout(() => process.stdout.write(String(seen)), 300)
`,
  )
  const { spawnSync } = await import('node:child_process')
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], {
    encoding: 'utf8',
    cwd: join(import.meta.dirname ?? '.', '..', '..'),
  })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout, '1')
})
