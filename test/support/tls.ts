/**
 * A throw-away PKI for tests: a CA, a server certificate for 127.0.0.1/localhost and a client
 * certificate, made with the `openssl` CLI in a private temp dir.
 *
 * EC P-256 keys keep generation to a few milliseconds (RSA-2048 takes hundreds).
 *
 * @packageDocumentation
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Files (and the CA's bytes) of a test PKI. */
export interface TestPki {
  /** The temp dir holding every file. */
  dir: string
  /** PEM file of the CA certificate: what clients trust. */
  caFile: string
  /** The CA certificate as PEM bytes. */
  ca: Buffer
  /** PEM server certificate (SAN IP:127.0.0.1, DNS:localhost). */
  serverCertFile: string
  /** PEM private key of the server certificate. */
  serverKeyFile: string
  /** PEM client certificate (extendedKeyUsage clientAuth). */
  clientCertFile: string
  /** PEM private key of the client certificate. */
  clientKeyFile: string
  /** Removes the temp dir. */
  close(): Promise<void>
}

/** Options of {@link createTestPki}. */
export interface CreateTestPkiOptions {
  /** Create the files in this existing dir instead of a new temp dir (not removed by close()). */
  dir?: string
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd })
}

async function issue(
  dir: string,
  name: string,
  subject: string,
  extensions: string,
): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`)
  const csr = join(dir, `${name}.csr`)
  const cert = join(dir, `${name}.crt`)
  const ext = join(dir, `${name}.ext`)
  await writeFile(ext, extensions)
  await openssl(
    ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'].concat([
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      subject,
    ]),
    dir,
  )
  await openssl(
    ['x509', '-req', '-in', csr, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial'].concat([
      '-days',
      '2',
      '-sha256',
      '-out',
      cert,
      '-extfile',
      ext,
    ]),
    dir,
  )
  return { cert, key }
}

/**
 * Creates a CA, a server certificate valid for `127.0.0.1` and `localhost`, and a client
 * certificate, all valid for two days.
 *
 * @param options - where to put the files.
 * @returns the file paths, the CA PEM, and `close()` to remove the temp dir.
 * @throws when the `openssl` CLI is missing or fails.
 * @example
 * ```ts
 * const pki = await createTestPki()
 * t.after(() => pki.close())
 * https.createServer({ cert: readFileSync(pki.serverCertFile), key: readFileSync(pki.serverKeyFile) })
 * ```
 */
export async function createTestPki(options: CreateTestPkiOptions = {}): Promise<TestPki> {
  const owned = options.dir === undefined
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'edgetoken-pki-')))
  try {
    await openssl(
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'].concat([
        '-keyout',
        'ca.key',
        '-out',
        'ca.crt',
        '-days',
        '2',
        '-sha256',
        '-subj',
        '/CN=edgetoken test CA',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ]),
      dir,
    )
    const server = await issue(
      dir,
      'server',
      '/CN=127.0.0.1',
      'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n',
    )
    const client = await issue(
      dir,
      'client',
      '/CN=edgetoken-test-client',
      'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
    )
    const caFile = join(dir, 'ca.crt')
    return {
      dir,
      caFile,
      ca: await readFile(caFile),
      serverCertFile: server.cert,
      serverKeyFile: server.key,
      clientCertFile: client.cert,
      clientKeyFile: client.key,
      close: async () => {
        if (owned) await rm(dir, { recursive: true, force: true })
      },
    }
  } catch (err) {
    if (owned) await rm(dir, { recursive: true, force: true })
    throw err
  }
}
