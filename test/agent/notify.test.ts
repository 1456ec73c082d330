/**
 * The sd_notify client against a real AF_UNIX datagram socket: a python3 receiver plays PID 1
 * (binds the socket, prints each datagram, closes the barrier fds it receives, like systemd does).
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, describe, mock, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createNotifier, watchdogIntervalMs } from '../../src/agent/notify.js'
import type { EdgeTokenError } from '../../src/errors.js'

const hasPython =
  spawnSync('python3', ['-c', 'import socket; socket.AF_UNIX'], { stdio: 'ignore' }).status === 0
const hasNotify = spawnSync('systemd-notify', ['--version'], { stdio: 'ignore' }).status === 0
const skip = !hasPython
  ? 'python3 is not installed (needed as the datagram receiver)'
  : !hasNotify
    ? 'systemd-notify is not installed (Debian package: systemd)'
    : false

// Binds argv[1] ('@name' = abstract namespace), prints "ready", then one JSON string per datagram.
const RECEIVER = `
import array, json, os, socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + name[1:] if name.startswith('@') else name)
print('ready', flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(64))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array('i')
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    print(json.dumps(data.decode('utf-8', 'replace')), flush=True)
`

interface Receiver {
  /** NOTIFY_SOCKET value. */
  socket: string
  /** Every datagram so far, BARRIER=1 included. */
  messages: string[]
  /** Resolves when `count` datagrams (barriers excluded) matching `filter` have arrived. */
  waitFor(count: number, filter?: (m: string) => boolean): Promise<string[]>
}

const dir = mkdtempSync(join(tmpdir(), 'edgetoken-notify-'))
const children: ChildProcess[] = []
after(() => {
  for (const c of children) c.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
})

async function startReceiver(abstract = false): Promise<Receiver> {
  const socket = abstract
    ? `@edgetoken-test-${randomBytes(6).toString('hex')}`
    : join(dir, `n-${randomBytes(4).toString('hex')}`)
  const child = spawn('python3', ['-c', RECEIVER, socket], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  const messages: string[] = []
  const waiters = new Set<() => void>()
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)))
    lines.on('line', (line) => {
      if (line === 'ready') {
        resolve()
        return
      }
      messages.push(JSON.parse(line) as string)
      for (const w of waiters) w()
    })
  })
  const nonBarrier = () => messages.filter((m) => m !== 'BARRIER=1')
  return {
    socket,
    messages,
    waitFor(count, filter = () => true) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const got = nonBarrier().filter(filter)
          if (got.length >= count) {
            waiters.delete(check)
            clearTimeout(timer)
            resolve(got)
          }
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`timed out waiting for ${count} messages; got ${JSON.stringify(messages)}`))
        }, 20_000)
        waiters.add(check)
        check()
      })
    },
  }
}

describe('watchdogIntervalMs', () => {
  test('is half of WATCHDOG_USEC, in ms', () => {
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '60000000' }, 42), 30_000)
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: '42' }, 42), 30_000)
  })

  test('is undefined without a watchdog, for another PID, or for garbage', () => {
    assert.equal(watchdogIntervalMs({}, 42), undefined)
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: '41' }, 42), undefined)
    for (const bad of ['', '0', '-5', '1e9', 'abc', '12.5', '99999999999999999999'])
      assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: bad }, 42), undefined, bad)
  })
})

describe('createNotifier', () => {
  test('is undefined when NOTIFY_SOCKET is unset or empty (not under systemd)', () => {
    assert.equal(createNotifier({}), undefined)
    assert.equal(createNotifier({ NOTIFY_SOCKET: '' }), undefined)
    assert.equal(createNotifier({ WATCHDOG_USEC: '1000000' }), undefined)
  })

  test('rejects a nonsensical timeout as a programmer error', () => {
    assert.throws(() => createNotifier({ NOTIFY_SOCKET: '/x' }, { timeoutMs: 0 }), {
      name: 'TypeError',
      code: 'ERR_INVALID_ARG_VALUE',
    })
  })
})

describe('startWatchdog scheduling (mocked setInterval)', () => {
  test('issue 20: WATCHDOG=1 every half of WATCHDOG_USEC, first one half a period in, none after stop', () => {
    mock.timers.enable({ apis: ['setInterval'] })
    try {
      // 1.5 s watchdog: one ping per 750 ms. No socket is touched: watchdog() itself is counted.
      const notifier = createNotifier({ NOTIFY_SOCKET: '/nonexistent/notify', WATCHDOG_USEC: '1500000' })
      assert.ok(notifier)
      const pings = mock.method(notifier, 'watchdog', async () => true)
      const stop = notifier.startWatchdog()
      notifier.startWatchdog() // a second call must not add a second timer
      mock.timers.tick(749)
      assert.equal(pings.mock.callCount(), 0, 'no ping before 750 ms')
      mock.timers.tick(1)
      assert.equal(pings.mock.callCount(), 1, 'one ping at 750 ms')
      mock.timers.tick(749)
      assert.equal(pings.mock.callCount(), 1, 'no second ping before 1500 ms')
      mock.timers.tick(1)
      assert.equal(pings.mock.callCount(), 2, 'the second ping at 1500 ms')
      mock.timers.tick(750 * 4)
      assert.equal(pings.mock.callCount(), 6, 'one ping per 750 ms')
      stop()
      mock.timers.tick(750 * 4)
      assert.equal(pings.mock.callCount(), 6, 'no pings after stop')
    } finally {
      mock.timers.reset()
    }
  })
})

describe('sd_notify over a real datagram socket', { skip }, () => {
  test('READY, STATUS, WATCHDOG and STOPPING arrive in order, each followed by a barrier', async () => {
    const rx = await startReceiver()
    const notifier = createNotifier({ NOTIFY_SOCKET: rx.socket, PATH: process.env.PATH })
    assert.ok(notifier)
    const results = await Promise.all([
      notifier.ready('signed in as device-1'),
      notifier.status('uploading'),
      notifier.watchdog(),
      notifier.stopping(),
    ])
    assert.deepEqual(results, [true, true, true, true])
    const got = await rx.waitFor(4)
    assert.deepEqual(got, [
      'READY=1\nSTATUS=signed in as device-1',
      'STATUS=uploading',
      'WATCHDOG=1',
      'STOPPING=1',
    ])
    // systemd-notify waited for "PID 1" each time: no attribution race after the child exits.
    // (The receiver prints the last barrier just after closing its fd, which is what released
    // stopping(): give that line a moment to arrive.)
    for (let i = 0; i < 200 && rx.messages.length < 8; i++) await new Promise((r) => setTimeout(r, 10))
    assert.deepEqual(
      rx.messages,
      got.flatMap((m) => [m, 'BARRIER=1']),
    )
    notifier.close()
  })

  test('reaches a socket in the abstract namespace (leading @)', async () => {
    const rx = await startReceiver(true)
    const notifier = createNotifier({ NOTIFY_SOCKET: rx.socket, PATH: process.env.PATH })
    assert.equal(await notifier?.ready(), true)
    assert.deepEqual(await rx.waitFor(1), ['READY=1'])
  })

  test('a status cannot inject fields: control characters become spaces, length is capped', async () => {
    const rx = await startReceiver()
    const notifier = createNotifier({ NOTIFY_SOCKET: rx.socket, PATH: process.env.PATH })
    assert.equal(await notifier?.status('line one\nREADY=1\r\x1b[31mred'), true)
    assert.equal(await notifier?.status('x'.repeat(500)), true)
    const got = await rx.waitFor(2)
    assert.equal(got[0], 'STATUS=line one READY=1 [31mred')
    assert.equal(got[1], `STATUS=${'x'.repeat(200)}`)
  })

  test('startWatchdog pings at half of WATCHDOG_USEC until stopped', async () => {
    const rx = await startReceiver()
    const notifier = createNotifier({
      NOTIFY_SOCKET: rx.socket,
      PATH: process.env.PATH,
      WATCHDOG_USEC: '200000',
    })
    assert.equal(notifier?.watchdogIntervalMs, 100)
    const stop = notifier?.startWatchdog()
    notifier?.startWatchdog() // a second call must not double the pings
    await rx.waitFor(3, (m) => m === 'WATCHDOG=1')
    stop?.()
    await notifier?.status('after stop') // the queue is flushed once this one is through
    const count = rx.messages.filter((m) => m === 'WATCHDOG=1').length
    await new Promise((r) => setTimeout(r, 500))
    assert.equal(rx.messages.filter((m) => m === 'WATCHDOG=1').length, count, 'pings continued after stop')
  })

  test('without a watchdog, startWatchdog sends nothing', async () => {
    const rx = await startReceiver()
    const notifier = createNotifier({ NOTIFY_SOCKET: rx.socket, PATH: process.env.PATH })
    assert.equal(notifier?.watchdogIntervalMs, undefined)
    notifier?.startWatchdog()
    await notifier?.status('only this')
    assert.deepEqual(await rx.waitFor(1), ['STATUS=only this'])
    assert.equal(rx.messages.includes('WATCHDOG=1'), false)
  })

  test('after close, notifications are not sent', async () => {
    const rx = await startReceiver()
    const notifier = createNotifier({ NOTIFY_SOCKET: rx.socket, PATH: process.env.PATH })
    notifier?.close()
    assert.equal(await notifier?.ready(), false)
    await new Promise((r) => setTimeout(r, 200))
    assert.deepEqual(rx.messages, [])
  })

  test('a missing socket resolves false and reports one error, not one per attempt', async () => {
    const errors: EdgeTokenError[] = []
    const notifier = createNotifier(
      { NOTIFY_SOCKET: join(dir, 'nobody-listens'), PATH: process.env.PATH },
      { onError: (e) => errors.push(e) },
    )
    assert.equal(await notifier?.ready(), false)
    assert.equal(await notifier?.watchdog(), false)
    assert.equal(errors.length, 1)
    assert.equal(errors[0]?.code, 'ERR_IO')
    assert.match(errors[0]?.message ?? '', /systemd-notify failed/)
  })

  test('a missing notify tool resolves false with an ERR_IO error', async () => {
    const errors: EdgeTokenError[] = []
    const notifier = createNotifier(
      { NOTIFY_SOCKET: join(dir, 'x'), PATH: process.env.PATH },
      { command: join(dir, 'no-such-systemd-notify'), onError: (e) => errors.push(e) },
    )
    assert.equal(await notifier?.ready(), false)
    assert.equal(errors[0]?.code, 'ERR_IO')
    assert.match(errors[0]?.message ?? '', /cannot run/)
  })

  test('never keeps the process alive: a daemon with a watchdog and no other work exits', async () => {
    const rx = await startReceiver()
    const moduleUrl = new URL('../../src/agent/notify.ts', import.meta.url).href
    const script = `
      const { createNotifier } = await import(${JSON.stringify(moduleUrl)})
      const n = createNotifier({ NOTIFY_SOCKET: ${JSON.stringify(rx.socket)}, PATH: process.env.PATH, WATCHDOG_USEC: '2000000' })
      n.startWatchdog()
      void n.ready('up')
    `
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    children.push(child)
    let stderr = ''
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const code = await new Promise<number | string>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        resolve('still running after 30 s')
      }, 30_000)
      child.once('exit', (c) => {
        clearTimeout(timer)
        resolve(c ?? -1)
      })
    })
    assert.equal(code, 0, stderr)
    // The READY=1 child outlives its parent and still gets through.
    assert.deepEqual(await rx.waitFor(1), ['READY=1\nSTATUS=up'])
  })
})
