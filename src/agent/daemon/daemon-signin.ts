/**
 * The daemon's sign-in state: whether a person has to sign in again, and everything that follows
 * from it. Entering it (a dead refresh token, or no account) pauses renewal and upload and says
 * so everywhere someone might look: a warning line, a `signin_required` event, the systemd status,
 * and the retained notice on the MQTT login topic for the companion display. Leaving it (a
 * sign-in through a pair request, or `edgetoken login` run next to the daemon, noticed as new
 * tokens in the store) undoes all of that and resumes the paused work.
 *
 * Separate from the daemon because the state has several ways in and out (the renewer, the upload
 * loop, a pair request, a store watch) and each must keep the announcements consistent; in one
 * place, the transitions cannot drift apart.
 *
 * @packageDocumentation
 */
import type { MqttRelay } from '../../display/mqtt-relay.js'
import { isEdgeTokenError } from '../../errors.js'
import type { AccountStatus } from '../../store/cache.js'
import { type DaemonOutput, errorText } from './daemon-output.js'

/** The systemd status while sign-in is required. */
const SIGNIN_REQUIRED_STATUS = 'sign-in required; spooling readings'
/** The systemd status while the daemon works normally. */
const RUNNING_STATUS = 'running'
/** Default of {@link SigninStateOptions.watchMs}. */
const DEFAULT_SIGNIN_WATCH_MS = 10_000

/** Options of {@link createSigninState}. */
export interface SigninStateOptions {
  /** The daemon's stop signal: once it fired, sign-in is neither entered nor started. */
  signal: AbortSignal
  /** Log, warnings and events. */
  output: DaemonOutput
  /** Sets the systemd status line. */
  setStatus: (text: string) => void
  /** Whether a pair request from the companion display can start a sign-in (said in the hints). */
  pairEnabled: boolean
  /** Runs a device flow to the end (the `login` command's code path); without it, none is started. */
  signIn: ((signal: AbortSignal) => Promise<void>) | undefined
  /** Reads the account's state from the token store (no lock, no network). */
  readStatus: () => Promise<AccountStatus>
  /**
   * The store could not be read (`ERR_STORE_UNREADABLE`: wrong key, tampered, another machine's):
   * the daemon stops; nothing here retries or warns about it.
   */
  onStoreUnreadable: (error: unknown) => void
  /** While sign-in is required, how often the store is checked for a new sign-in, ms. Default 10000. */
  watchMs?: number | undefined
  /** Sign-in became required: stop what needs a token (renewal). */
  onRequired: () => void
  /** Signed in (again): resume renewal and wake the uploads. */
  onSignedIn: () => void
}

/** The sign-in state created by {@link createSigninState}. */
export interface SigninState {
  /** Whether a person has to sign in before renewal and upload can go on. */
  readonly required: boolean
  /** The device flow in progress, if any; settles (never rejects) when it ends. */
  readonly signingIn: Promise<void> | undefined
  /** The systemd status that matches the state. */
  readonly status: string
  /**
   * Enters the state (no-op when already in it, or once stopping): pauses renewal, announces it,
   * and watches the store for a sign-in made by another process.
   *
   * @param reason - why, for the warning and the event.
   */
  enter(reason: string): void
  /**
   * Starts a device sign-in through the injected hook, only while sign-in is required (a device
   * that is signed in is never taken over: issue 11), and unless there is no hook, one is running,
   * or the daemon is stopping. A request while signed in is ignored with one log line per
   * signed-in period. Failures are logged; the state stays as it was.
   *
   * @param why - what asked for it, for the log.
   * @returns whether a sign-in was started.
   */
  startSignIn(why: string): boolean
  /**
   * Gives the state the companion display's relay (on the daemon's own MQTT client), and
   * announces the state there when sign-in is already required.
   *
   * @param relay - the relay.
   */
  attachRelay(relay: MqttRelay): void
  /** Stops watching the store (the daemon is stopping); the state itself is kept for the summary. */
  stopWatching(): void
}

/**
 * Creates the sign-in state, initially not required.
 *
 * @param options - stop signal, output, the sign-in hook, the store reader and the callbacks.
 * @returns the state.
 */
export function createSigninState(options: SigninStateOptions): SigninState {
  const { signal, output, setStatus, pairEnabled } = options
  const { log, warn, emit } = output
  let required = false
  let since = 0
  let marker: number | null = null
  let watch: NodeJS.Timeout | undefined
  let signingIn: Promise<void> | undefined
  let relay: MqttRelay | undefined
  // One line per signed-in period about ignored requests: a stuck button must not fill the journal.
  let ignoredLogged = false

  const announce = () => {
    if (required && !signal.aborted) void relay?.announceSigninRequired({ since, pair: pairEnabled })
  }

  const leave = (how: string) => {
    if (!required) return
    required = false
    ignoredLogged = false
    if (watch) clearInterval(watch)
    watch = undefined
    void relay?.clearSigninRequired()
    log(`edgetoken: signed in again (${how}); renewal and upload resume`)
    emit({ event: 'signed_in' })
    setStatus(RUNNING_STATUS)
    options.onSignedIn()
  }

  const storeFailed = (err: unknown): boolean => {
    if (!isEdgeTokenError(err, 'ERR_STORE_UNREADABLE')) return false
    options.onStoreUnreadable(err)
    return true
  }

  const enter = (reason: string) => {
    if (required || signal.aborted) return
    required = true
    since = Date.now()
    options.onRequired()
    const how = pairEnabled
      ? "run 'edgetoken login' or send a pair request from the companion display"
      : "run 'edgetoken login'"
    warn(`sign-in required (${reason}): ${how}; readings are still spooled`)
    emit({ event: 'signin_required', message: reason })
    setStatus(SIGNIN_REQUIRED_STATUS)
    announce()
    // Notice a sign-in made by another process (`edgetoken login`): new tokens in the store.
    void options
      .readStatus()
      .then((s) => {
        marker = s.signedIn ? s.accessTokenExpiresAt : null
      })
      .catch(() => {})
    watch = setInterval(() => {
      void options
        .readStatus()
        .then((s) => {
          if (s.signedIn && s.accessTokenExpiresAt !== marker) leave('new tokens in the store')
        })
        .catch((err: unknown) => {
          if (!storeFailed(err) && !signal.aborted) warn(`cannot read the token store: ${errorText(err)}`)
        })
    }, options.watchMs ?? DEFAULT_SIGNIN_WATCH_MS)
    watch.unref()
  }

  const startSignIn = (why: string): boolean => {
    const signIn = options.signIn
    if (!signIn || signingIn || signal.aborted) return false
    if (!required) {
      if (!ignoredLogged) {
        log(
          `edgetoken: ignored a ${why}: the device is signed in (a sign-in starts only while one is required)`,
        )
      }
      ignoredLogged = true
      return false
    }
    log(`edgetoken: starting a device sign-in (${why})`)
    setStatus('waiting for sign-in approval')
    // The flow's pending code replaces the notice on the relay; the notice must not come back on
    // a reconnect meanwhile.
    relay?.suspendSigninRequired()
    signingIn = signIn(signal)
      .then(
        () => {
          if (required) leave(why)
          else {
            log('edgetoken: signed in')
            emit({ event: 'signed_in' })
            setStatus(RUNNING_STATUS)
            options.onSignedIn()
          }
        },
        (err: unknown) => {
          if (storeFailed(err)) return
          if (!signal.aborted) warn(`sign-in did not complete: ${errorText(err)}`)
          setStatus(required ? SIGNIN_REQUIRED_STATUS : RUNNING_STATUS)
          // The flow has published its end state and cleared the topic: still signed out.
          announce()
        },
      )
      .finally(() => {
        signingIn = undefined
      })
    return true
  }

  return {
    get required() {
      return required
    },
    get signingIn() {
      return signingIn
    },
    get status() {
      return required ? SIGNIN_REQUIRED_STATUS : RUNNING_STATUS
    },
    enter,
    startSignIn,
    attachRelay(r) {
      relay = r
      announce()
    },
    stopWatching() {
      if (watch) clearInterval(watch)
    },
  }
}
