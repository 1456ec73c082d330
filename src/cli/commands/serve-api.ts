/** `edgetoken serve-api`: not implemented yet. */
import { EdgeTokenError } from '../../errors.js'
import type { CommandModule } from '../context.js'

const command: CommandModule = {
  help: 'Usage: edgetoken serve-api [options]\n\nNot implemented yet.',
  async run() {
    throw new EdgeTokenError('ERR_INTERNAL', "'serve-api' is not implemented yet")
  },
}
export default command
