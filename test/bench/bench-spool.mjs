#!/usr/bin/env node
// Benchmarks of the telemetry spool and uploader (figures, not tests):
//   1. durable spool append, records/s (goal >= 100k/s), group commit with concurrent appenders;
//   2. upload to the loopback reference API vs raw undici POSTs of the same batches
//      (goal >= 50k records/s and >= 0.8x raw);
//   3. start-up time and RSS of a process opening a spool with a large backlog (default 1024 MiB,
//      the size a device reaches after days offline; goal: flat RSS, start < 1 s).
// Usage: node test/bench/bench-spool.mjs [--records N] [--backlog-mib M] [--only append|upload|backlog]
// Runs the TypeScript sources through tsx (re-executes itself with --import tsx when needed).
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const root = new URL('../..', import.meta.url).pathname
if (!process.env.EDGETOKEN_BENCH_TSX) {
  const res = spawnSync(
    process.execPath,
    ['--import', 'tsx', new URL(import.meta.url).pathname, ...process.argv.slice(2)],
    {
      stdio: 'inherit',
      cwd: root,
      env: { ...process.env, EDGETOKEN_BENCH_TSX: '1' },
    },
  )
  process.exit(res.status ?? 1)
}

const { values } = parseArgs({
  options: {
    records: { type: 'string', default: '200000' },
    'backlog-mib': { type: 'string', default: '1024' },
    only: { type: 'string' },
    'child-open': { type: 'string' },
    'child-api': { type: 'boolean' },
    'max-bytes': { type: 'string' },
  },
})

const { openSpool } = await import('../../src/telemetry/spool/spool.ts')

// Child mode: open a spool with a backlog, read one batch, report time and RSS.
if (values['child-open']) {
  const t0 = performance.now()
  const spool = await openSpool(values['child-open'], {
    maxBytes: Number(values['max-bytes'] ?? 4 * 1024 ** 3),
  })
  const stats = await spool.stats()
  const batch = await spool.readBatch({ maxRecords: 500 })
  const ms = performance.now() - t0
  await spool.close()
  process.stdout.write(
    `${JSON.stringify({ ms, rssMiB: process.memoryUsage().rss / 1024 ** 2, pending: stats.pending, batch: batch?.count })}\n`,
  )
  process.exit(0)
}

// Child mode: the IdP and the API in their own process, so client and server do not share a CPU
// thread (as on a real device); prints the endpoint and a token, runs until stdin closes.
if (values['child-api']) {
  const { startTestIdp } = await import('../support/idp.ts')
  const { startTestApi } = await import('../support/api.ts')
  const idp = await startTestIdp({ accessTokenTtlSeconds: 3600 })
  const api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
  const token = await idp.signAccessToken()
  process.stdout.write(`${JSON.stringify({ url: api.url, token })}\n`)
  process.stdin.resume()
  process.stdin.on('end', async () => {
    await api.close()
    await idp.close()
    process.exit(0)
  })
  await new Promise(() => {})
}

const N = Number(values.records)
const only = values.only
const record = (i) => ({ ts: '2026-11-25T10:00:00Z', sensor: 'temp-1', seq: i, value: 21.5 + (i % 10) / 10 })
const fmt = (n) => Math.round(n).toLocaleString('en-US')

async function tempDir() {
  return mkdtemp(join(tmpdir(), 'edgetoken-bench-'))
}

async function benchAppend() {
  const dir = await tempDir()
  try {
    const spool = await openSpool(dir, { maxBytes: 1024 ** 3 })
    // 64 concurrent producers, 100 records per append call: the group commit shares fsyncs.
    const perCall = 100
    const producers = 64
    let next = 0
    const t0 = performance.now()
    await Promise.all(
      Array.from({ length: producers }, async () => {
        while (next < N) {
          const from = next
          next += perCall
          await spool.append(Array.from({ length: perCall }, (_, i) => record(from + i)))
        }
      }),
    )
    const s = (performance.now() - t0) / 1000
    const stats = await spool.stats()
    console.log(
      `spool append (durable, ${producers} producers x ${perCall}/call): ${fmt(stats.pending)} records in ${s.toFixed(2)} s = ${fmt(stats.pending / s)} records/s (goal >= 100,000)`,
    )
    // One producer, each call waiting for its fsync: the floor without group commit.
    const t1 = performance.now()
    let done = 0
    while (performance.now() - t1 < 1000) {
      await spool.append([record(done)])
      done++
    }
    const s1 = (performance.now() - t1) / 1000
    console.log(
      `spool append (durable, 1 record per call, sequential): ${fmt(done / s1)} appends/s (one fsync each)`,
    )
    await spool.close()
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function benchUpload() {
  const { spawn } = await import('node:child_process')
  const { Uploader } = await import('../../src/telemetry/upload/uploader.ts')
  const { Pool } = await import('undici')
  const server = spawn(
    process.execPath,
    ['--import', 'tsx', new URL(import.meta.url).pathname, '--child-api'],
    {
      cwd: root,
      env: process.env,
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  )
  const first = await new Promise((resolve, reject) => {
    let buf = ''
    server.stdout.on('data', (d) => {
      buf += d
      if (buf.includes('\n')) resolve(buf.split('\n')[0])
    })
    server.on('exit', () => reject(new Error('API process exited')))
  })
  const { url, token } = JSON.parse(first)
  const api = { url }
  const dir = await tempDir()
  const batchSize = 500
  try {
    // Raw: the same batch bodies, POSTed one after another over one keep-alive connection.
    const bodies = []
    for (let i = 0; i < N; i += batchSize) {
      const records = Array.from({ length: Math.min(batchSize, N - i) }, (_, j) =>
        JSON.stringify(record(i + j)),
      )
      bodies.push(
        (id, seq) => `{"device_id":"raw","batch_id":"${id}","seq":${seq},"records":[${records.join(',')}]}`,
      )
    }
    let rawRun = 0
    const rawOnce = async () => {
      const pool = new Pool(new URL(api.url).origin, { connections: 1 })
      const t0 = performance.now()
      for (let i = 0; i < bodies.length; i++) {
        const id = `raw-${rawRun}-${i}`
        const res = await pool.request({
          path: '/ingest',
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            authorization: `Bearer ${token}`,
            'idempotency-key': id,
          },
          body: bodies[i](id, i),
        })
        await res.body.text()
        if (res.statusCode !== 200) throw new Error(`raw POST answered ${res.statusCode}`)
      }
      rawRun++
      const rate = N / ((performance.now() - t0) / 1000)
      await pool.close()
      return rate
    }
    let spoolRun = 0
    const oursOnce = async () => {
      const d = join(dir, `run${spoolRun++}`)
      const spool = await openSpool(d, { maxBytes: 1024 ** 3 })
      for (let i = 0; i < N; i += 5000)
        await spool.append(Array.from({ length: Math.min(5000, N - i) }, (_, j) => record(i + j)))
      const uploader = new Uploader({
        spool,
        endpoint: api.url,
        deviceId: `bench${spoolRun}`,
        getAccessToken: async () => token,
        batchMaxRecords: batchSize,
      })
      const t1 = performance.now()
      const result = await uploader.drain()
      await spool.flush()
      const rate = result.delivered / ((performance.now() - t1) / 1000)
      await uploader.close()
      await spool.close()
      return rate
    }
    // One warm-up of each (JIT, the API's key set), then alternate the two so a busy machine
    // hurts both alike; report the median of 5 each.
    await rawOnce()
    await oursOnce()
    const raws = []
    const ours = []
    for (let r = 0; r < 5; r++) {
      raws.push(await rawOnce())
      ours.push(await oursOnce())
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[2]
    const raw = median(raws)
    const mine = median(ours)
    console.log(
      `upload to the loopback reference API (own process), ${fmt(N)} records in batches of ${batchSize}:`,
    )
    console.log(`  raw undici POSTs (no spool):   ${fmt(raw)} records/s`)
    console.log(
      `  uploader (spool read + durable ack): ${fmt(mine)} records/s = ${(mine / raw).toFixed(2)}x raw (goal >= 50,000 and >= 0.8x)`,
    )
    console.log(`  (runs: raw ${raws.map(fmt).join(', ')}; uploader ${ours.map(fmt).join(', ')})`)
  } finally {
    server.stdin.end()
    await rm(dir, { recursive: true, force: true })
  }
}

async function benchBacklog() {
  const mib = Number(values['backlog-mib'])
  if (!Number.isFinite(mib) || mib <= 0)
    throw new Error(`--backlog-mib must be a positive number, got ${values['backlog-mib']}`)
  const target = mib * 1024 ** 2
  // Room for the whole backlog: nothing may be dropped while it is written.
  const maxBytes = Math.max(4 * 1024 ** 3, 2 * target)
  console.log(
    `backlog: ${mib} MiB (--backlog-mib ${mib}), spool bound ${(maxBytes / 1024 ** 2).toFixed(0)} MiB`,
  )
  const dir = await tempDir()
  try {
    const spool = await openSpool(dir, { maxBytes })
    const pad = 'x'.repeat(400)
    let i = 0
    let bytes = 0
    const t0 = performance.now()
    while (bytes < target) {
      const chunk = Array.from({ length: 2000 }, (_, j) => ({ ...record(i + j), pad }))
      await spool.append(chunk)
      i += chunk.length
      bytes = (await spool.stats()).bytes
    }
    const writeS = (performance.now() - t0) / 1000
    await spool.close()
    console.log(
      `backlog: wrote ${(bytes / 1024 ** 2).toFixed(0)} MiB (${fmt(i)} records) in ${writeS.toFixed(1)} s`,
    )
    const runs = []
    for (let r = 0; r < 3; r++) {
      const res = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          new URL(import.meta.url).pathname,
          '--child-open',
          dir,
          '--max-bytes',
          String(maxBytes),
        ],
        { cwd: root, env: process.env, encoding: 'utf8' },
      )
      if (res.status !== 0) throw new Error(res.stderr)
      runs.push(JSON.parse(res.stdout.trim()))
    }
    const empty = await tempDir()
    const base = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        new URL(import.meta.url).pathname,
        '--child-open',
        empty,
        '--max-bytes',
        String(maxBytes),
      ],
      {
        cwd: root,
        env: process.env,
        encoding: 'utf8',
      },
    )
    await rm(empty, { recursive: true, force: true })
    const b = JSON.parse(base.stdout.trim())
    const best = runs.sort((x, y) => x.ms - y.ms)[0]
    console.log(
      `  open + stats + first batch with ${(bytes / 1024 ** 2).toFixed(0)} MiB backlog: ${best.ms.toFixed(1)} ms, RSS ${best.rssMiB.toFixed(1)} MiB ` +
        `(empty spool: ${b.ms.toFixed(1)} ms, RSS ${b.rssMiB.toFixed(1)} MiB; pending ${fmt(best.pending)})`,
    )
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

console.log(`node ${process.version}, ${process.platform}/${process.arch}`)
if (!only || only === 'append') await benchAppend()
if (!only || only === 'upload') await benchUpload()
if (!only || only === 'backlog') await benchBacklog()
