/**
 * A device sign-in in progress, kept in the encrypted store so that the next `login` or `run`
 * resumes it (issue 14): a gateway that reboots while someone is typing the code does not make
 * them start over. Also the account's DPoP key (RFC 9449) before its first sign-in: the device
 * code's token request is already bound to it.
 *
 * Written under the store lock, durably, like the tokens: the device code is as secret as a
 * refresh token for the minutes it lives, and it is never written anywhere else.
 *
 * @packageDocumentation
 */

import type { DPoPKeyRecord } from '../oauth/dpop.js'
import type { SavedDeviceAuthorization } from '../oauth/grants/device.js'
import type { AccountIdentity } from './cache.js'
import { accountKey, type PendingSignIn } from './document.js'
import type { TokenStore } from './token-store.js'

/** Options of the writes here. */
export interface PendingSignInWriteOptions {
  /** Stops waiting for the store lock. */
  signal?: AbortSignal | undefined
}

/**
 * The account's pending device sign-in, when one is stored and has not expired.
 *
 * @param store - the opened store.
 * @param identity - which account.
 * @param now - the clock, epoch ms. Default `Date.now()`.
 * @returns the pending sign-in, or undefined. Secret (the device code).
 */
export async function readPendingSignIn(
  store: TokenStore,
  identity: AccountIdentity,
  now: number = Date.now(),
): Promise<PendingSignIn | undefined> {
  const doc = await store.read()
  const pending = doc.pendingSignIns?.[accountKey(identity.authority, identity.clientId)]
  // An expired one is as good as none; the write that starts the next one replaces it.
  return pending !== undefined && pending.flow.expiresAt > now ? pending : undefined
}

/**
 * The account's DPoP key, when one is stored.
 *
 * @param store - the opened store.
 * @param identity - which account.
 * @returns the key record, or undefined. Secret.
 */
export async function readDPoPKey(
  store: TokenStore,
  identity: AccountIdentity,
): Promise<DPoPKeyRecord | undefined> {
  return (await store.read()).dpopKeys?.[accountKey(identity.authority, identity.clientId)]
}

/**
 * Saves a device sign-in that has just started (replacing any other of the account), with the
 * DPoP key its token requests are signed with, in one durable write.
 *
 * @param store - the opened store.
 * @param identity - which account.
 * @param flow - the saved device authorization (with its device code).
 * @param dpopKey - the key the polls prove, when DPoP is used.
 * @param options - a signal to stop waiting for the lock.
 * @returns when it is on disk.
 */
export async function savePendingSignIn(
  store: TokenStore,
  identity: AccountIdentity,
  flow: SavedDeviceAuthorization,
  dpopKey: DPoPKeyRecord | undefined,
  options: PendingSignInWriteOptions = {},
): Promise<void> {
  const key = accountKey(identity.authority, identity.clientId)
  await store.withLock(
    async () => {
      const doc = await store.read()
      doc.pendingSignIns = { ...doc.pendingSignIns, [key]: { flow: { ...flow }, startedAt: Date.now() } }
      if (dpopKey !== undefined) doc.dpopKeys = { ...doc.dpopKeys, [key]: dpopKey }
      await store.write(doc)
    },
    { signal: options.signal },
  )
}

/**
 * Records the interval now in force for a pending sign-in (after `slow_down`, RFC 8628 §3.5), so
 * a resumed flow keeps it. Does nothing when the stored sign-in is another one (a newer `login`).
 *
 * @param store - the opened store.
 * @param identity - which account.
 * @param deviceCode - the device code of the flow being polled (secret).
 * @param intervalSeconds - the interval in force.
 * @param options - a signal to stop waiting for the lock.
 * @returns when it is on disk (or nothing had to change).
 */
export async function updatePendingInterval(
  store: TokenStore,
  identity: AccountIdentity,
  deviceCode: string,
  intervalSeconds: number,
  options: PendingSignInWriteOptions = {},
): Promise<void> {
  const key = accountKey(identity.authority, identity.clientId)
  await store.withLock(
    async () => {
      const doc = await store.read()
      const pending = doc.pendingSignIns?.[key]
      if (pending === undefined || pending.flow.deviceCode !== deviceCode) return
      if (pending.flow.intervalSeconds === intervalSeconds) return
      pending.flow = { ...pending.flow, intervalSeconds }
      await store.write(doc)
    },
    { signal: options.signal },
  )
}

/**
 * Removes the account's pending sign-in: it was denied, expired, cancelled on purpose, or
 * completed. Only the one with this device code, when given (a newer flow is left alone).
 *
 * @param store - the opened store.
 * @param identity - which account.
 * @param deviceCode - the device code of the flow that ended (secret); any when omitted.
 * @param options - a signal to stop waiting for the lock.
 * @returns whether one was removed.
 */
export async function clearPendingSignIn(
  store: TokenStore,
  identity: AccountIdentity,
  deviceCode?: string,
  options: PendingSignInWriteOptions = {},
): Promise<boolean> {
  const key = accountKey(identity.authority, identity.clientId)
  return store.withLock(
    async () => {
      const doc = await store.read()
      const pending = doc.pendingSignIns?.[key]
      if (pending === undefined) return false
      if (deviceCode !== undefined && pending.flow.deviceCode !== deviceCode) return false
      delete doc.pendingSignIns?.[key]
      await store.write(doc)
      return true
    },
    { signal: options.signal },
  )
}
