/**
 * Undo steps for whatever a command set up (daemons, temp dirs), run last
 * first, each once, all of them even when one fails. A step added after the
 * teardown began (a daemon that finished starting during Ctrl-C) is undone
 * right away, so nothing registered is ever left behind.
 */
import { toError } from '../errors';

interface Step {
  what: string;
  undo: () => unknown;
}

export class Teardown {
  private readonly steps: Step[] = [];
  private draining: Promise<void> | undefined;
  private started = false;
  /** "what: message" for every undo step that failed. */
  readonly failures: string[] = [];

  /** Whether run() has been called: new work should not start. */
  get begun(): boolean {
    return this.started;
  }

  add(what: string, undo: () => unknown): void {
    this.steps.push({ what, undo });
    if (this.started) void this.run();
  }

  /** Undo everything registered so far; resolves when no step is left. */
  run(): Promise<void> {
    this.started = true;
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  private async drain(): Promise<void> {
    for (let step = this.steps.pop(); step !== undefined; step = this.steps.pop()) {
      try {
        await step.undo();
      } catch (err) {
        this.failures.push(`${step.what}: ${toError(err).message}`);
      }
    }
  }
}
