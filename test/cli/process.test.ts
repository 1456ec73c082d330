import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const processModule = fileURLToPath(new URL('../../src/cli/process.ts', import.meta.url))

/**
 * Starts a child whose command ignores the stop signal (as a command stuck in a hung request or
 * file system would), with the forced exit shortened to `forceExitMs`.
 */
function stuckCommand(forceExitMs: number) {
  const script = `
    import { runProcess } from ${JSON.stringify(processModule)}
    await runProcess([], {
      forceExitMs: ${forceExitMs},
      main: () => { process.stdout.write('started\\n'); return new Promise(() => { setInterval(() => {}, 1000) }) },
    })`
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const started = new Promise<void>((resolve) => {
    child.stdout.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('started')) resolve()
    })
  })
  // A child that never ends fails the test (SIGKILL is not exit 130) instead of hanging it.
  const guard = setTimeout(() => child.kill('SIGKILL'), 10_000)
  const exited = (once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>).finally(() =>
    clearTimeout(guard),
  )
  return { child, started, exited }
}

test('a command that ignores the first SIGTERM is ended with exit 130 after the forced-exit delay', async () => {
  const { child, started, exited } = stuckCommand(300)
  await started
  const signalledAt = Date.now()
  child.kill('SIGTERM')
  const [code, signal] = await exited
  assert.equal(signal, null)
  assert.equal(code, 130)
  // Not at once (the command had its chance to stop), and not never.
  assert.ok(Date.now() - signalledAt >= 250, 'the first signal only asks the command to stop')
})

test('a second SIGINT ends a stuck command at once with exit 130', async () => {
  const { child, started, exited } = stuckCommand(60_000)
  await started
  child.kill('SIGINT')
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(child.exitCode, null, 'still stopping after the first signal')
  child.kill('SIGINT')
  const [code] = await exited
  assert.equal(code, 130)
})
