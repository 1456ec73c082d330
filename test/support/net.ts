/**
 * Small networking helpers shared by the test servers.
 */
import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * Starts listening on 127.0.0.1.
 *
 * @param server - the server to start.
 * @param port - the port; 0 (default) lets the OS choose a free one.
 * @returns the port actually bound.
 */
export function listen(server: Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err)
    server.once('error', onError)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', onError)
      resolve((server.address() as AddressInfo).port)
    })
  })
}

/**
 * Stops a server and drops its open (keep-alive) connections, so `close()` does not wait for
 * clients that keep a socket open.
 *
 * @param server - the server to stop.
 * @returns when the server has closed.
 */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve()
      return
    }
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

/**
 * Finds a free TCP port on 127.0.0.1 (for servers that cannot bind port 0 themselves, such as
 * mosquitto). Another process may take it before it is used; callers start quickly.
 *
 * @returns a port that was free a moment ago.
 */
export async function freePort(): Promise<number> {
  const server = createServer()
  const port = await listen(server)
  await closeServer(server)
  return port
}

/**
 * SHA-256 of a string, hex encoded; used to record a secret's identity without the secret.
 *
 * @param value - the secret.
 * @returns 64 hex characters.
 */
export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex')
}
