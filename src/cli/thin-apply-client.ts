/**
 * `lazypull rollout apply` without the CLI bundle. The CLI's entry
 * (scripts/cli-loader.js) runs this first: the apply is on the timed path
 * of a rollout, which starts with this command, and loading the whole CLI
 * costs ~0.1 s. Same command, same output: the flags as commander reads
 * them for `rollout apply` (main.ts); the manifest read, the request, the
 * line or JSON printed and the errors come from the modules
 * rollout-command.ts uses too (rollout-apply-io.ts, controller-http.ts,
 * controller-answer.ts, command-exit.ts). It answers false, and the full
 * CLI runs the command, for anything it does not read as the CLI's parser
 * would (--help, a new flag, an operand) and with $LAZYPULL_DEBUG (the
 * CLI's error stacks name its own files). `LAZYPULL_THIN_CLIENT=0` (read by
 * the loader) skips this client.
 *
 * Only small modules may be imported here: no CLI parser, no YAML.
 */
import { exitQuietlyOnEpipe, reportError } from './command-exit';
import { answerJson, serverUrl } from './controller-answer';
import { callController } from './controller-http';
import { APPLY_METHOD, APPLY_PATH, appliedOutput, readManifest, type ApplyAnswer } from './rollout-apply-io';

export interface ThinApplyArgs {
  /** `-` for stdin */
  file: string;
  server?: string;
  json: boolean;
}

const VALUE_FLAGS = { '--file': 'file', '--server': 'server' } as const;

/**
 * `lazypull rollout apply`'s arguments (after "apply"): `-f FILE`, `-fFILE`,
 * `--file FILE`, `--file=FILE`, `--server URL`, `--server=URL`, `--json`,
 * the last of a repeated flag counting, as commander reads them; undefined
 * for anything else, and for values commander would take but the command
 * then refuses or that look like a forgotten value (empty, `-x`).
 */
export function parseThinApplyArgs(args: string[]): ThinApplyArgs | undefined {
  const values: { file?: string; server?: string } = {};
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--json') {
      json = true;
      continue;
    }
    let name: keyof typeof VALUE_FLAGS;
    let value: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const flag = eq >= 0 ? arg.slice(0, eq) : arg;
      if (!(flag in VALUE_FLAGS)) return undefined;
      name = flag as keyof typeof VALUE_FLAGS;
      value = eq >= 0 ? arg.slice(eq + 1) : args[++i];
    } else if (arg.startsWith('-f')) {
      name = '--file';
      value = arg.length > 2 ? arg.slice(2) : args[++i];
    } else {
      return undefined;
    }
    if (value === undefined || value === '' || (value.startsWith('-') && value !== '-')) return undefined;
    if (value === '-' && name !== '--file') return undefined;
    values[VALUE_FLAGS[name]] = value;
  }
  if (values.file === undefined) return undefined;
  return { file: values.file, ...(values.server !== undefined ? { server: values.server } : {}), json };
}

/**
 * Apply without the CLI. True when the apply was done (or failed) and
 * printed; false when the caller should run the full CLI.
 */
export async function thinRolloutApply(args: string[]): Promise<boolean> {
  if (process.env.LAZYPULL_DEBUG) return false;
  const flags = parseThinApplyArgs(args);
  if (!flags) return false;
  exitQuietlyOnEpipe();
  try {
    const manifest = await readManifest(flags.file);
    const { status, text } = await callController(serverUrl(flags.server), APPLY_METHOD, APPLY_PATH, manifest);
    process.stdout.write(appliedOutput(answerJson<ApplyAnswer>(APPLY_METHOD, APPLY_PATH, status, text), flags.json));
  } catch (err) {
    reportError(err);
  }
  return true;
}
