/** `edgetoken login`: not implemented yet. */
import { EdgeTokenError } from '../../errors.js'
import type { CommandModule } from '../context.js'

const command: CommandModule = {
  help: 'Usage: edgetoken login [options]\n\nNot implemented yet.',
  async run() {
    throw new EdgeTokenError('ERR_INTERNAL', "'login' is not implemented yet")
  },
}
export default command
