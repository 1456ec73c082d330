/**
 * Server children of the tests (mosquitto, redis-server) that must not outlive the test process:
 * each is killed when the process exits, and on the SIGTERM with which node:test ends a timed-out
 * test file (which skips 'exit' handlers).
 */
import type { ChildProcess } from 'node:child_process'

/** Every tracked child still alive. */
const live = new Set<ChildProcess>()
let hooked = false

function killAllSync(): void {
  for (const child of live) child.kill('SIGKILL')
  live.clear()
}

function hookProcessExit(): void {
  if (hooked) return
  hooked = true
  process.on('exit', killAllSync)
  // Clean up, then re-raise so the process still dies of the signal, unless someone else handles it.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const onSignal = () => {
      killAllSync()
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal)
        process.kill(process.pid, signal)
      }
    }
    process.on(signal, onSignal)
  }
}

/**
 * Kills `child` with the test process, whatever ends it, until the child exits by itself.
 *
 * @param child - a spawned server.
 */
export function reapWithProcess(child: ChildProcess): void {
  hookProcessExit()
  live.add(child)
  child.once('exit', () => live.delete(child))
}
