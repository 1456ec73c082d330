/** `edgetoken upload`: not implemented yet. */
import { EdgeTokenError } from '../../errors.js'
import type { CommandModule } from '../context.js'

const command: CommandModule = {
  help: 'Usage: edgetoken upload [options]\n\nNot implemented yet.',
  async run() {
    throw new EdgeTokenError('ERR_INTERNAL', "'upload' is not implemented yet")
  },
}
export default command
