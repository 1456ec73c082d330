/**
 * Pair requests against a running `edgetoken run` (issue 11 #1), with the real test IdP and
 * mosquitto: a companion display's button press may start a sign-in only while the device needs
 * one, and that sign-in may restore the stored account but never replace it with another one.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { approveDevice } from '../../support/headless-user.js'
import { startRecorder } from '../../support/mqtt-recorder.js'
import { startCli, useDaemonFixture, waitUntil } from './daemon-harness.js'

describe('edgetoken run: pair requests (issue 11 #1)', { timeout: 120_000 }, () => {
  const f = useDaemonFixture({ api: false })
  const {
    children,
    setup,
    login,
    waitForRetained,
    sendPair,
    markSigninRequired,
    statusOf,
    isActive,
    assertNoSecrets,
  } = f

  test('issue 11 #1: a signed-in device ignores a valid pair request: no device authorization, account unchanged', async () => {
    const env = await setup('paired', 'gw-paired')
    await login(env)
    const before = await statusOf(env)
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')

    const userCodesBefore = f.idp.issued.userCodes.length
    await sendPair('gw-paired')
    // Whichever comes first: the daemon's line about the request, or a device flow at the IdP.
    await waitUntil(
      () => /ignored a pair request/.test(daemon.stderr()) || f.idp.issued.userCodes.length > userCodesBefore,
      'the pair request handled',
      15_000,
      daemon.stderr,
    )
    assert.equal(f.idp.issued.userCodes.length, userCodesBefore, 'no device authorization request at the IdP')
    assert.doesNotMatch(daemon.stderr(), /starting a device sign-in/)
    const after = await statusOf(env)
    assert.deepEqual(after.account, before.account)
    assert.equal(after.signed_in, true)
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
  })

  test('issue 11 #1: a pair approval for another account is refused: stored account kept, its new refresh token revoked (RFC 7009 §2.1)', async () => {
    const env = await setup('other', 'gw-other')
    await login(env)
    const storedToken = String(f.idp.issued.refreshTokens.at(-1))
    await markSigninRequired(env)
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'signin_required', 'signin_required')
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')
    const relay = await startRecorder(f.broker, 'edgetoken/gw-other/login')

    const userCodesBefore = f.idp.issued.userCodes.length
    await sendPair('gw-other')
    await waitUntil(
      () => f.idp.issued.userCodes.length > userCodesBefore,
      'a device flow: sign-in is required',
      30_000,
      daemon.stderr,
    )
    const refreshTokensBefore = f.idp.issued.refreshTokens.length
    await approveDevice(f.idp.issuer, String(f.idp.issued.userCodes.at(-1)), { login: 'someone-else' })
    await waitUntil(
      () => /approved as someone-else, but this device holds device-user/.test(daemon.stderr()),
      'the refusal in the log',
      30_000,
      daemon.stderr,
    )
    assert.match(daemon.stderr(), /run 'edgetoken login' on the device/)
    assert.equal(f.idp.issued.refreshTokens.length, refreshTokensBefore + 1, 'the other account got tokens')
    assert.equal(await isActive(String(f.idp.issued.refreshTokens.at(-1))), false, 'and they were revoked')
    assert.equal(await isActive(storedToken), true, 'the stored account was not touched')

    const status = await statusOf(env)
    assert.equal((status.account as { username?: string }).username, 'device-user')
    assert.equal(status.needs_sign_in, true)
    assert.ok(!daemon.events.some((e) => e.event === 'signed_in'))

    // The display saw the flow end as denied, and the notice is back: a person must still act.
    await waitForRetained(
      'edgetoken/gw-other/login',
      (p) => p.length === 1 && (JSON.parse(p[0] ?? '{}') as { state?: string }).state === 'signin_required',
      'the signin_required notice back',
    )
    const states = relay.messages
      .filter((m) => !m.retain && m.payload.length > 0)
      .map((m) => (JSON.parse(m.payload.toString()) as { state?: string }).state)
    assert.ok(states.includes('denied'), `end state denied, got ${JSON.stringify(states)}`)
    await relay.close()
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assertNoSecrets(daemon)
  })

  test('issue 11 #1: a pair approval for the same account signs in and revokes the refresh token it replaced (RFC 7009 §2.1)', async () => {
    const env = await setup('same', 'gw-same')
    await login(env)
    const replaced = String(f.idp.issued.refreshTokens.at(-1))
    await markSigninRequired(env)
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')
    const userCodesBefore = f.idp.issued.userCodes.length
    await sendPair('gw-same')
    await waitUntil(
      () => f.idp.issued.userCodes.length > userCodesBefore,
      'a device flow',
      30_000,
      daemon.stderr,
    )
    await approveDevice(f.idp.issuer, String(f.idp.issued.userCodes.at(-1)))
    await daemon.waitForEvent((e) => e.event === 'signed_in', 'signed_in', 30_000)
    await waitUntil(
      () => /revoked the replaced refresh token/.test(daemon.stderr()),
      'the revocation',
      15_000,
      daemon.stderr,
    )
    assert.equal(await isActive(replaced), false, 'the replaced refresh token was revoked')
    const status = await statusOf(env)
    assert.equal(status.signed_in, true)
    assert.equal((status.account as { username?: string }).username, 'device-user')
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assertNoSecrets(daemon)
  })
})
