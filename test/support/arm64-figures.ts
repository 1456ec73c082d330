/**
 * The arm64 lane's figures (test/arm64.sh --measure), on the node that runs the product
 * (`EDGETOKEN_TEST_CLI_PREFIX` + `EDGETOKEN_TEST_NODE`, see ./cli.ts):
 * - the cached `token` against a bare `node -e 0`, interleaved runs, the medians of wall time and
 *   of CPU time (user + system; under emulation on a shared machine the CPU time is the steadier
 *   figure) and of peak RSS;
 * - the idle RSS of a bare `node` holding a timer, the emulator's baseline to set the daemon's idle
 *   RSS (test/bench/bench-daemon.mjs) against.
 *
 * Usage: node --import tsx test/support/arm64-figures.ts [--runs 20] [--idle-seconds 40]
 * Needs dist/cli.js, /usr/bin/time (Debian `time`) and /proc.
 */
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { cliEnv, newTestDevice, productNode, ROOT, seedCachedToken } from './cli.js'

const TIME = '/usr/bin/time'

/** One run's wall time, CPU time (user + system) and peak RSS. */
interface Run {
  wallMs: number
  cpuMs: number
  maxRssKiB: number
}

/**
 * Runs a command once under `/usr/bin/time`.
 *
 * @param command - the program and its arguments.
 * @param env - its environment.
 * @returns its wall time, CPU time and peak RSS, and its stdout.
 */
function timed(command: readonly string[], env: NodeJS.ProcessEnv): Run & { stdout: string } {
  const r = spawnSync(TIME, ['-f', 'figures %e %U %S %M', ...command], { env, encoding: 'utf8' })
  const m = /figures ([\d.]+) ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(r.stderr)
  if (r.status !== 0 || !m) throw new Error(`${command.join(' ')} exited ${r.status}: ${r.stderr}`)
  return {
    wallMs: Number(m[1]) * 1000,
    cpuMs: (Number(m[2]) + Number(m[3])) * 1000,
    maxRssKiB: Number(m[4]),
    stdout: r.stdout,
  }
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? Number.NaN
}

/** The `VmRSS`, `RssAnon` and `RssFile` lines of a process, KiB. */
function rssOf(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN)
  return { rss: field('VmRSS'), anon: field('RssAnon'), file: field('RssFile') }
}

const mib = (kib: number): string => (kib / 1024).toFixed(1)

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { runs: { type: 'string', default: '20' }, 'idle-seconds': { type: 'string', default: '40' } },
  })
  const runs = Math.max(3, Number(values.runs) || 20)
  const idleSeconds = Math.max(1, Number(values['idle-seconds']) || 40)
  const cli = join(ROOT, 'dist', 'cli.js')
  if (!existsSync(cli) || !existsSync(TIME)) throw new Error(`needs ${cli} (npm run build) and ${TIME}`)
  const node = productNode()
  const version = spawnSync(
    node[0] as string,
    [...node.slice(1), '-p', 'process.version + " " + process.arch'],
    {
      encoding: 'utf8',
    },
  ).stdout.trim()

  const root = mkdtempSync(join(tmpdir(), 'edgetoken-arm64-figures-'))
  try {
    // The bare node idles while the token runs go on (it wakes only at start).
    const idle = spawn(node[0] as string, [...node.slice(1), '-e', 'setInterval(() => {}, 1 << 30)'], {
      stdio: 'ignore',
    })
    const idleStarted = Date.now()

    const device = newTestDevice(root, { issuer: 'http://127.0.0.1:9' })
    const { token } = await seedCachedToken(device)
    const env = cliEnv({ env: device.env })
    const bare = [...node, '-e', '0']
    const cached = [...node, cli, 'token']
    if (timed(cached, env).stdout !== `${token}\n`) throw new Error('the CLI did not print the cached token')
    for (let i = 0; i < 2; i++) {
      timed(bare, env)
      timed(cached, env)
    }
    const results: { bare: Run[]; token: Run[] } = { bare: [], token: [] }
    for (let i = 0; i < runs; i++) {
      // Interleaved, so changes in the machine's load hit both alike.
      results.bare.push(timed(bare, env))
      results.token.push(timed(cached, env))
    }
    const m = (which: 'bare' | 'token', key: keyof Run) => median(results[which].map((r) => r[key]))
    console.log(`node ${version} via ${node.join(' ')}; ${runs} interleaved runs each, medians`)
    for (const which of ['bare', 'token'] as const) {
      const name = which === 'bare' ? 'node -e 0       ' : 'token (cached)  '
      console.log(
        `  ${name} wall ${m(which, 'wallMs').toFixed(0)} ms  CPU ${m(which, 'cpuMs').toFixed(0)} ms  peak RSS ${mib(m(which, 'maxRssKiB'))} MiB`,
      )
    }
    console.log(
      `  ratio token / node -e 0: wall ${(m('token', 'wallMs') / m('bare', 'wallMs')).toFixed(2)}x, CPU ${(m('token', 'cpuMs') / m('bare', 'cpuMs')).toFixed(2)}x`,
    )

    await sleep(Math.max(0, idleStarted + idleSeconds * 1000 - Date.now()))
    if (idle.exitCode !== null || idle.pid === undefined) throw new Error('the idle node exited')
    const rss = rssOf(idle.pid)
    idle.kill('SIGKILL')
    console.log(
      `  idle bare node (a timer) after ${idleSeconds} s: RSS ${mib(rss.rss)} MiB (private ${mib(rss.anon)}, file-backed ${mib(rss.file)})`,
    )
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

await main()
