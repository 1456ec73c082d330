/** The package version; a test keeps it equal to package.json's. Used in `--version` and the user-agent. */
export const VERSION = '0.1.0'
