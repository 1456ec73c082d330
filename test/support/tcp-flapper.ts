/**
 * A TCP relay on loopback that flaps: it forwards every connection to a loopback port (a broker)
 * and, while flapping, destroys every open connection every few seconds, as a Wi-Fi link that
 * drops or a broker that restarts would. New connections are accepted at once afterwards, so the
 * clients' reconnect logic is what is under test.
 *
 * Loopback only: the target is always 127.0.0.1.
 */
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net'

/** Options of {@link startTcpFlapper}. */
export interface TcpFlapperOptions {
  /** The loopback port to forward to. */
  targetPort: number
  /** Shortest time between cuts, ms. Default 2000. */
  minPeriodMs?: number
  /** Longest time between cuts, ms (each period is drawn between the two). Default 3000. */
  maxPeriodMs?: number
}

/** A running flapper. */
export interface TcpFlapper {
  /** `mqtt://127.0.0.1:PORT` (for MQTT clients) . */
  url: string
  port: number
  /** Starts cutting every open connection every period. */
  startFlapping(): void
  /** Stops cutting; open connections are left alone. */
  stopFlapping(): void
  /** How many times connections were cut (only cuts that found a connection count). */
  cuts(): number
  /** Client connections accepted so far. */
  connections(): number
  /** Stops listening and destroys every connection. */
  close(): Promise<void>
}

/**
 * Starts a flapping relay on a free 127.0.0.1 port (not flapping until {@link TcpFlapper.startFlapping}).
 *
 * @param options - the target port and the cut period.
 * @returns the relay.
 * @example
 * ```ts
 * const link = await startTcpFlapper({ targetPort: broker.port })
 * t.after(() => link.close())
 * link.startFlapping()
 * ```
 */
export async function startTcpFlapper(options: TcpFlapperOptions): Promise<TcpFlapper> {
  const minMs = options.minPeriodMs ?? 2000
  const maxMs = Math.max(minMs, options.maxPeriodMs ?? 3000)
  const pairs = new Set<[Socket, Socket]>()
  let accepted = 0
  let cuts = 0
  let timer: ReturnType<typeof setTimeout> | undefined

  const server: Server = createServer((client) => {
    accepted += 1
    const upstream = connect(options.targetPort, '127.0.0.1')
    const pair: [Socket, Socket] = [client, upstream]
    pairs.add(pair)
    const drop = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop)
    upstream.on('error', drop)
    client.on('close', drop)
    upstream.on('close', drop)
    client.pipe(upstream)
    upstream.pipe(client)
  })

  const cut = () => {
    if (pairs.size > 0) cuts += 1
    for (const [a, b] of pairs) {
      // A reset, not a FIN: the client sees the link die, as when a radio drops.
      a.resetAndDestroy()
      b.destroy()
    }
    pairs.clear()
  }
  const schedule = () => {
    timer = setTimeout(
      () => {
        cut()
        schedule()
      },
      minMs + Math.random() * (maxMs - minMs),
    )
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    startFlapping() {
      if (timer === undefined) schedule()
    },
    stopFlapping() {
      clearTimeout(timer)
      timer = undefined
    },
    cuts: () => cuts,
    connections: () => accepted,
    close: () =>
      new Promise<void>((resolve) => {
        clearTimeout(timer)
        timer = undefined
        cut()
        server.close(() => resolve())
      }),
  }
}
