/**
 * `lazypull demo`: runs the built-in demo (src/demo) with progress lines, or
 * quietly with one JSON object for scripts. Ctrl-C and SIGTERM tear the
 * demo's daemons and temp dir down before the process exits.
 */
import { runDemo, type DemoReport } from '../demo/run-demo';
import { Teardown } from '../demo/teardown';

export interface DemoFlags {
  json?: boolean;
  keep?: boolean;
}

const EXIT_CODE_BY_SIGNAL: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

export async function demoCommand(flags: DemoFlags): Promise<void> {
  const teardown = new Teardown();
  const log = flags.json ? () => undefined : (line: string) => void process.stdout.write(`${line}\n`);
  const opts = { keep: flags.keep === true, log, teardown };
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted !== undefined) {
      // A second signal: give up waiting; the exit hooks still kill the daemons and remove their dirs.
      process.stderr.write('lazypull demo: forced exit\n');
      process.exit(EXIT_CODE_BY_SIGNAL[signal] ?? 1);
    }
    interrupted = signal;
    process.stderr.write(`lazypull demo: ${signal}, stopping containerd, the lazypull snapshotter and the registry ...\n`);
    // Stopping the daemons makes the running step fail fast; runDemo then removes its dir.
    void teardown.run();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let report: DemoReport | undefined;
  try {
    report = await runDemo(opts);
  } catch (err) {
    if (interrupted === undefined) throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  // Interrupted, even if the last step finished meanwhile: report it as the user asked.
  if (interrupted !== undefined || report === undefined) {
    await teardown.run();
    const outcome = teardown.failures.length > 0 ? `clean-up incomplete: ${teardown.failures.join('; ')}` : 'cleaned up';
    process.stderr.write(`lazypull demo: interrupted, ${outcome}${flags.keep ? ' (the temp dir was kept)' : ''}\n`);
    process.exit(EXIT_CODE_BY_SIGNAL[interrupted ?? ''] ?? 1);
  }
  process.stdout.write(flags.json ? `${JSON.stringify(report)}\n` : `done in ${report.totalSeconds.toFixed(1)} s\n`);
}
