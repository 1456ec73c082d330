/**
 * Issue 11 #4: a nearly full disk must not burn the refresh token. Room for the save is reserved
 * before the refresh grant is sent, so a full disk fails before the request, with the refresh token
 * kept, and space running out during the request does not fail the save. Against the real test
 * IdP (oidc-provider, rotating refresh tokens: a spent one is `invalid_grant`).
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import {
  closeSync,
  fstatSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeSync,
} from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, type TestContext, test } from 'node:test'
import { StoreError } from '../../src/errors.js'
import { durableFileIo } from '../../src/lib/fs/durable-file.js'
import { resolveAuthority } from '../../src/oauth/authority.js'
import { refreshTokenGrant } from '../../src/oauth/grants/refresh.js'
import type { TokenSet } from '../../src/oauth/types.js'
import { acquireTokenSilent, readAccountStatus, readRefreshToken, saveSignIn } from '../../src/store/cache.js'
import { openTokenStore, STORE_FILE, type TokenStore } from '../../src/store/token-store.js'
import { newTestDevice, seedSignIn } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-disk-full-'))
after(() => rmSync(root, { recursive: true, force: true }))

const SCOPES = ['openid', 'offline_access', 'telemetry:write']

function noSpace(): NodeJS.ErrnoException {
  return Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28 })
}

/** Plays a full disk: every temporary file of a durable write opens, and every write to it fails. */
function fillDisk(t: TestContext): void {
  const realOpen = durableFileIo.open
  t.mock.method(durableFileIo, 'open', async (path: string): Promise<FileHandle> => {
    const handle = await realOpen(path)
    handle.write = (async () => {
      throw noSpace()
    }) as FileHandle['write']
    handle.writeFile = async () => {
      throw noSpace()
    }
    return handle
  })
}

describe('issue 11 #4: a full disk never burns the refresh token', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 300 })
  })
  after(async () => {
    await idp?.close()
  })

  async function signedIn(
    stateDir?: string,
  ): Promise<{ store: TokenStore; stateDir: string; env: Record<string, string> }> {
    const device = newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
    const dir = stateDir ?? device.stateDir
    const env = { ...device.env, EDGETOKEN_STATE_DIR: dir }
    await seedSignIn({ issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES, stateDir: dir, env })
    return { store: await openTokenStore({ stateDir: dir, env }), stateDir: dir, env }
  }

  function forceRefresh(store: TokenStore, before?: () => void): Promise<unknown> {
    return acquireTokenSilent(store, {
      authority: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      forceRefresh: true,
      refresh: async (rt, scopes): Promise<TokenSet> => {
        before?.()
        return refreshTokenGrant(
          await resolveAuthority(idp.issuer),
          { clientId: idp.publicClientId },
          rt,
          scopes,
        )
      },
    })
  }

  test('the refresh is not sent: exit-1 store error, store unchanged, and it refreshes once space is back', async (t) => {
    const { store, stateDir } = await signedIn()
    const identity = { authority: idp.issuer, clientId: idp.publicClientId }
    const storeBefore = readFileSync(join(stateDir, STORE_FILE))
    const refreshToken = await readRefreshToken(store, identity)
    const refreshes = idp.refreshes

    fillDisk(t)
    await assert.rejects(
      forceRefresh(store),
      (err: unknown) =>
        err instanceof StoreError &&
        err.code === 'ERR_IO' &&
        err.category === 'internal' &&
        /has no room for a refreshed token \(ENOSPC\): no refresh was sent and the refresh token is kept/.test(
          err.message,
        ),
    )
    assert.equal(idp.refreshes, refreshes, 'no refresh grant reached the IdP')
    assert.deepEqual(readFileSync(join(stateDir, STORE_FILE)), storeBefore, 'the store is unchanged')
    assert.deepEqual(
      readdirSync(stateDir).filter((f) => f.includes('.tmp-')),
      [],
      'the reservation left no temporary file',
    )

    t.mock.restoreAll()
    await forceRefresh(store)
    assert.equal(idp.refreshes, refreshes + 1)
    assert.notEqual(await readRefreshToken(store, identity), refreshToken, 'rotated and saved')
    assert.equal((await readAccountStatus(store, identity)).signedIn, true)
  })

  test('an early refresh that refresh_in asked for keeps the still-valid token when the disk is full', async (t) => {
    const store = await openTokenStore({ stateDir: mkdtempSync(join(root, 'state-')), env: {} })
    const T0 = 1_800_000_000_000
    await saveSignIn(store, {
      authority: 'https://idp.test/',
      clientId: 'client-1',
      account: { id: 'user-1', issuer: 'https://idp.test' },
      tokenSet: {
        accessToken: 'at-0',
        tokenType: 'bearer',
        expiresAt: T0 + 3600_000,
        scopes: ['api:read'],
        refreshToken: 'rt-0',
        refreshInSeconds: 1800,
      },
      requestedScopes: ['api:read'],
      requestedAt: T0,
    })
    fillDisk(t)
    let calls = 0
    const got = await acquireTokenSilent(store, {
      authority: 'https://idp.test/',
      clientId: 'client-1',
      scopes: ['api:read'],
      now: () => T0 + 1900_000,
      refresh: async () => {
        calls += 1
        throw new Error('not reached')
      },
    })
    assert.deepEqual(
      { token: got.accessToken, fromCache: got.fromCache, calls },
      { token: 'at-0', fromCache: true, calls: 0 },
    )
  })

  /** A small tmpfs (root only), and a file that fills it to the last block. */
  function tmpfs(t: TestContext, size: string) {
    const mountPoint = mkdtempSync(join(root, 'tmpfs-'))
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', mountPoint])
    if (mounted.status !== 0) {
      t.skip('cannot mount a tmpfs here')
      return undefined
    }
    t.after(() => spawnSync('umount', [mountPoint]))
    const filler = join(mountPoint, 'filler')
    /** Fills the file system, then gives back `leaveBytes`. */
    const fill = (leaveBytes = 0): void => {
      const fd = openSync(filler, 'a')
      try {
        for (const chunk of [64 * 1024, 4096, 512, 1]) {
          const buffer = Buffer.alloc(chunk)
          for (;;) {
            try {
              writeSync(fd, buffer)
            } catch {
              break
            }
          }
        }
        if (leaveBytes > 0) ftruncateSync(fd, Math.max(0, fstatSync(fd).size - leaveBytes))
      } finally {
        closeSync(fd)
      }
    }
    return { stateDir: join(mountPoint, 'state'), fill, free: () => rmSync(filler, { force: true }) }
  }

  test('on a real full file system (tmpfs): no refresh sent; the reserved room outlasts space running out during the request', {
    skip: process.getuid?.() !== 0 ? 'needs root to mount a tmpfs' : false,
  }, async (t) => {
    const disk = tmpfs(t, '1m')
    if (!disk) return
    const { store, stateDir } = await signedIn(disk.stateDir)
    const identity = { authority: idp.issuer, clientId: idp.publicClientId }
    const refreshes = idp.refreshes

    // Room for the lock, not for the reservation (the store plus 64 KiB).
    disk.fill(16 * 1024)
    await assert.rejects(
      forceRefresh(store),
      (err: unknown) =>
        err instanceof StoreError &&
        err.code === 'ERR_IO' &&
        /has no room for a refreshed token \(ENOSPC\)/.test(err.message),
    )
    assert.equal(idp.refreshes, refreshes, 'no refresh grant reached the IdP')
    // Full to the last block: the lock cannot be taken either, and nothing is sent.
    disk.fill()
    await assert.rejects(
      forceRefresh(store),
      (err: unknown) => err instanceof StoreError && err.code === 'ERR_IO',
    )
    assert.equal(idp.refreshes, refreshes, 'no refresh grant reached the IdP')
    assert.deepEqual(
      readdirSync(stateDir).filter((f) => f.includes('.tmp-')),
      [],
      'no temporary left behind',
    )
    disk.free()

    // Something else fills the disk while the request is out: the save goes into the reserved blocks.
    await forceRefresh(store, () => disk.fill())
    assert.equal(idp.refreshes, refreshes + 1)
    disk.free()
    assert.equal((await readAccountStatus(store, identity)).signedIn, true)
    await forceRefresh(store)
    assert.equal(idp.refreshes, refreshes + 2, 'the saved refresh token is the live one')
    assert.deepEqual(
      readdirSync(stateDir).filter((f) => f.includes('.tmp-')),
      [],
    )
  })
})
