/**
 * The next step the CLI tells a user to run (`run: edgetoken --config /etc/x.json login`): it
 * repeats the `--config` and `--state-dir` given on this command line, quoted for a POSIX shell, so
 * the command can be pasted as it is and reaches the same configuration and token store.
 *
 * The library names next steps as `run 'edgetoken <command>'` without knowing the command line;
 * only the CLI knows it, so the CLI rewrites them here (one place, one wording).
 */
import type { OptionValues } from './context.js'

/**
 * Quotes a word for a POSIX shell: as it is when it holds only characters no shell treats
 * specially, else in single quotes (a `'` inside becomes `'\''`).
 *
 * @param word - a path or argument.
 * @returns the word, safe to paste into sh, bash or zsh.
 */
export function shellQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word
  return `'${word.replace(/'/g, `'\\''`)}'`
}

/**
 * The edgetoken command line for a next step, with the `--config` and `--state-dir` of this one.
 *
 * @param options - this command line's flags (environment variables are not repeated: the next
 *   command runs in the same environment).
 * @param words - the command and its arguments (`login`).
 * @returns e.g. `edgetoken --config '/home/pi/my config.json' --state-dir /var/lib/x login`.
 */
export function nextCommand(options: OptionValues, ...words: string[]): string {
  const parts = ['edgetoken']
  if (typeof options.config === 'string') parts.push('--config', shellQuote(options.config))
  if (typeof options['state-dir'] === 'string') parts.push('--state-dir', shellQuote(options['state-dir']))
  return [...parts, ...words].join(' ')
}

/**
 * Rewrites the library's `…: run 'edgetoken login'` into `…; run: edgetoken --config … login`
 * (and `or run 'edgetoken login --browser'` into `or run: edgetoken --config … login --browser`).
 *
 * @param message - an error's one-line message.
 * @param options - this command line's flags.
 * @returns the message with every next step spelled for this command line.
 */
export function withNextSteps(message: string, options: OptionValues): string {
  return message.replace(
    /([:;])? run '(edgetoken [a-z][a-z -]*)'/g,
    (_, separator: string | undefined, step: string) =>
      `${separator === undefined ? '' : ';'} run: ${nextCommand(options, ...step.split(' ').slice(1))}`,
  )
}

/**
 * How to recover from a token store that cannot be opened (exit 6), for the end of its message.
 * Failures with an errno (`EACCES`) are about permissions and say so already: nothing is added.
 *
 * @param message - the store error's message.
 * @param storeFile - the store's path (`<state dir>/tokens.store`).
 * @param options - this command line's flags.
 * @returns the sentence to append (`. To recover: …`, ending in the command so it can be pasted),
 *   or the empty string.
 */
export function storeRecovery(message: string, storeFile: string, options: OptionValues): string {
  if (/\(E[A-Z]+\)$/.test(message)) return ''
  const stop = message.endsWith('.') ? '' : '.'
  const remove = `remove ${shellQuote(storeFile)} and run: ${nextCommand(options, 'login')}`
  if (/version/.test(message))
    return `${stop} To recover: run the edgetoken version that wrote it, or ${remove}`
  if (/another machine/.test(message)) return `${stop} To recover: ${remove}`
  return `${stop} To recover: restore the key that wrote it, or ${remove}`
}
