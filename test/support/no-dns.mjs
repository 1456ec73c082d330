// Loaded with `node --import` into a CLI child by the fault tests: name resolution that never
// leaves the machine. The system resolver here is a remote host (see /etc/resolv.conf), so even a
// `.invalid` name (RFC 2606 §2: never resolves) would be sent over the network; instead every
// name but `localhost` fails at once with ENOTFOUND, as getaddrinfo reports an unknown name.
// Each refused name is appended to the file named by EDGETOKEN_TEST_DNS_LOG, so the test can see
// the lookup was made. Plain JavaScript: it runs before tsx is loaded.

import dns from 'node:dns'
import { appendFileSync } from 'node:fs'

const log = process.env.EDGETOKEN_TEST_DNS_LOG
const original = dns.lookup
const originalPromises = dns.promises.lookup

function notFound(hostname) {
  if (log) appendFileSync(log, `${hostname}\n`)
  return Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), {
    code: 'ENOTFOUND',
    errno: -3008,
    syscall: 'getaddrinfo',
    hostname,
  })
}

dns.lookup = function lookup(hostname, options, callback) {
  const cb = typeof options === 'function' ? options : callback
  if (hostname === 'localhost') return original.call(this, hostname, options, callback)
  process.nextTick(cb, notFound(hostname))
  return {}
}

dns.promises.lookup = async function lookup(hostname, options) {
  if (hostname === 'localhost') return originalPromises.call(this, hostname, options)
  throw notFound(hostname)
}
