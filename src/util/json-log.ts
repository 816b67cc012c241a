/**
 * Structured logs: one JSON object per line on stderr, with a time, a
 * level and an event name, plus whatever facts the caller gives (layer
 * digest, snapshot key). Text from outside is redacted first.
 */
import { redact } from '../errors';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogEvent = Record<string, unknown> & { event?: string; level?: LogLevel };
export type Logger = (event: LogEvent) => void;

export function jsonLogger(minLevel: LogLevel = 'info', out: NodeJS.WritableStream = process.stderr): Logger {
  return (event) => {
    const level = event.level ?? 'info';
    if (RANK[level] < RANK[minLevel]) return;
    const line = JSON.stringify({ time: new Date().toISOString(), ...event, level });
    out.write(`${redact(line)}\n`);
  };
}

export function isLogLevel(value: string): value is LogLevel {
  return value in RANK;
}
