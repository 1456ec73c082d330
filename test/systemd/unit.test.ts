/**
 * The systemd unit: systemd/check.sh (systemd-analyze verify + offline security exposure
 * <= 2.0) passes on it and fails on broken or weak units; and the settings the daemon relies on are
 * there. systemd-analyze works without systemd running; the checks skip only when it is absent.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))
const script = join(root, 'systemd', 'check.sh')
const unitPath = join(root, 'systemd', 'edgetoken.service')
const unit = readFileSync(unitPath, 'utf8')

const hasAnalyze = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0
const skip = hasAnalyze
  ? false
  : 'systemd-analyze is not installed (Debian package: systemd); unit checks skipped'

const dir = mkdtempSync(join(tmpdir(), 'edgetoken-unit-'))
after(() => rmSync(dir, { recursive: true, force: true }))

function check(...args: string[]) {
  const res = spawnSync('bash', [script, ...args], { encoding: 'utf8', timeout: 60_000 })
  return { status: res.status, out: `${res.stdout}${res.stderr}` }
}

/** The values of `key=` in the unit, in order (comments excluded). */
function values(key: string): string[] {
  return unit
    .split('\n')
    .filter((line) => line.startsWith(`${key}=`))
    .map((line) => line.slice(key.length + 1))
}

describe('systemd/check.sh', { skip }, () => {
  test('passes on systemd/edgetoken.service and prints the exposure (<= 2.0)', (t) => {
    const { status, out } = check()
    assert.equal(status, 0, out)
    const match = /exposure (\d+\.\d) \(limit 2\.0\)/.exec(out)
    assert.ok(match, out)
    const exposure = Number(match[1])
    assert.ok(exposure <= 2.0, `exposure ${exposure}`)
    t.diagnostic(`systemd-analyze security exposure: ${exposure}`)
  })

  test('fails on an unknown key (verify is strict)', () => {
    const bad = join(dir, 'edgetoken.service')
    writeFileSync(bad, unit.replace('[Service]\n', '[Service]\nNoSuchSetting=yes\n'))
    const { status, out } = check(bad)
    assert.equal(status, 1, out)
    assert.match(out, /NoSuchSetting/)
    assert.match(out, /verify reported errors/)
  })

  test('fails when the hardening is weakened past the limit', () => {
    const weak = join(dir, 'weak.service')
    writeFileSync(weak, '[Unit]\nDescription=weak\n[Service]\nExecStart=/usr/bin/edgetoken run\n')
    const { status, out } = check(weak)
    assert.equal(status, 1, out)
    assert.match(out, /exposure \d+\.\d is above 2\.0/)
  })

  test('honours a stricter limit', () => {
    const { status, out } = check(unitPath, '0.5')
    assert.equal(status, 1, out)
    assert.match(out, /above 0\.5/)
  })
})

describe('systemd/edgetoken.service settings', () => {
  test('Type=notify with a watchdog, and NotifyAccess=all for the systemd-notify child', () => {
    assert.deepEqual(values('Type'), ['notify'])
    assert.deepEqual(values('NotifyAccess'), ['all'])
    assert.match(values('WatchdogSec')[0] ?? '', /^\d+s$/)
  })

  test('waits for the network and time synchronisation (no RTC on a Pi)', () => {
    assert.match(values('After').join(' '), /\bnetwork-online\.target\b.*\btime-sync\.target\b/)
    assert.deepEqual(values('Wants'), ['network-online.target'])
  })

  test('restarts on failure, but not on exit 2 (config) or 6 (store); 3 is not a daemon exit', () => {
    assert.deepEqual(values('Restart'), ['on-failure'])
    const prevent = (values('RestartPreventExitStatus')[0] ?? '').split(/\s+/)
    assert.deepEqual(prevent.sort(), ['2', '6'])
  })

  test('key, state and config locations match what edgetoken reads', () => {
    assert.deepEqual(values('LoadCredentialEncrypted'), [
      'edgetoken.key:/etc/credstore.encrypted/edgetoken.key',
    ])
    assert.deepEqual(values('StateDirectory'), ['edgetoken'])
    assert.deepEqual(values('StateDirectoryMode'), ['0700'])
    assert.deepEqual(values('UMask'), ['0077'])
    assert.ok(values('Environment').includes('EDGETOKEN_CONFIG=/etc/edgetoken/config.json'))
    assert.deepEqual(values('ExecStart'), ['/usr/bin/edgetoken run'])
  })

  test('issue 11 #2: MemoryMax= bounds the service (a runaway is killed and restarted, not the Pi)', () => {
    assert.deepEqual(values('MemoryMax'), ['256M'])
    assert.deepEqual(values('Restart'), ['on-failure'])
  })

  test('issue 21: RSS under load: V8 heap limits in NODE_OPTIONS and 2 glibc malloc arenas', () => {
    const env = values('Environment')
    // Measured with `npm run bench -- soak`; both are read by the process at start, so they must
    // be in the unit's environment, not set by the daemon.
    assert.ok(env.includes('"NODE_OPTIONS=--max-old-space-size=64 --max-semi-space-size=1"'), env.join('\n'))
    assert.ok(env.includes('MALLOC_ARENA_MAX=2'), env.join('\n'))
  })

  test('never MemoryDenyWriteExecute (V8 JIT), and filtered calls fail with EPERM instead of SIGSYS', () => {
    assert.deepEqual(values('MemoryDenyWriteExecute'), [])
    assert.deepEqual(values('SystemCallErrorNumber'), ['EPERM'])
    assert.deepEqual(values('RestrictAddressFamilies'), ['AF_UNIX AF_INET AF_INET6'])
    assert.deepEqual(values('CapabilityBoundingSet'), [''])
  })
})
