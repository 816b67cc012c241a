#!/usr/bin/env node
/**
 * Start-up time of the `lazypull` CLI: wall-clock time of whole processes
 * (spawn to exit) for commands that return at once, so the time is Node.js
 * start-up, loading and compiling the CLI, and running the command's first
 * steps; and the CPU time (user + system, all threads, from bash's `times`)
 * of the same processes, which other load on the machine disturbs less. Used for
 * docs/benchmarks.md, "CLI start-up (V8 code cache)".
 *
 *   node scripts/measure-cli-startup.js [--runs N] [--warmup N] [--command NAME]... VARIANT...
 *   VARIANT = LABEL=ENTRY[,NAME=VALUE...]   e.g.  cache=dist/src/cli/main.js  off=dist/src/cli/main.js,LAZYPULL_CODE_CACHE=0
 *
 * The variants run in turn (in a new random order each round), so a machine
 * that gets slower or faster meanwhile affects them alike. Prints one
 * Markdown table: median, 10th–90th percentile and min–max in ms.
 */
'use strict';

const { spawnSync } = require('node:child_process');
const { mkdtempSync, readFileSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');

const work = mkdtempSync(join(tmpdir(), 'lazypull-startup-'));
const timesFile = join(work, 'time');

const COMMANDS = {
  help: ['--help'],
  'pull-help': ['pull', '--help'],
  // Loads the pull command (grpc-js, proto-loader, undici), then fails at once: no containerd socket.
  'pull-no-containerd': ['pull', '127.0.0.1:1/none:latest', '--address', '/nonexistent/containerd.sock'],
  // Loads the mount command (fuse-native, the filesystem, undici), then fails at once: no such mount.
  'mount-status': ['mount', '--status', '/nonexistent/mountpoint'],
};

function parseArgs(argv) {
  const opts = { runs: 25, warmup: 3, commands: [], variants: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--runs') opts.runs = Number(argv[++i]);
    else if (a === '--warmup') opts.warmup = Number(argv[++i]);
    else if (a === '--command') opts.commands.push(argv[++i]);
    else {
      const [label, spec] = a.split(/=(.*)/s);
      const [entry, ...envs] = spec.split(',');
      const env = Object.fromEntries(envs.map((e) => e.split(/=(.*)/s).slice(0, 2)));
      opts.variants.push({ label, entry: resolve(entry), env });
    }
  }
  if (opts.commands.length === 0) opts.commands = Object.keys(COMMANDS);
  for (const c of opts.commands) if (!COMMANDS[c]) throw new Error(`unknown command ${c}: ${Object.keys(COMMANDS).join(', ')}`);
  if (opts.variants.length === 0) throw new Error('name at least one VARIANT (LABEL=ENTRY[,NAME=VALUE...])');
  return opts;
}

/** bash runs the command, then `times` writes the children's user and system time ("0m0.074s 0m0.020s", 2nd line). */
const TIMED = '"$@"; status=$?; times >"$LAZYPULL_MEASURE_TIMES"; exit $status';

function runOnce(variant, args) {
  const started = process.hrtime.bigint();
  const r = spawnSync('bash', ['-c', TIMED, 'bash', process.execPath, variant.entry, ...args], {
    env: { ...process.env, ...variant.env, LAZYPULL_MEASURE_TIMES: timesFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const children = readFileSync(timesFile, 'utf8').split('\n')[1].trim().split(/\s+/);
  const cpu = children.reduce((sum, t) => {
    const [, min, sec] = /^(\d+)m([\d.]+)s$/.exec(t);
    return sum + (Number(min) * 60 + Number(sec)) * 1000;
  }, 0);
  return { ms, cpu, status: r.status, out: `${r.stdout}${r.stderr}` };
}

function quantile(sorted, q) {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  return sorted[lo] + (sorted[Math.min(lo + 1, sorted.length - 1)] - sorted[lo]) * (pos - lo);
}

function shuffled(list) {
  const a = [...list];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const rows = [];
  for (const name of opts.commands) {
    const args = COMMANDS[name];
    const times = new Map(opts.variants.map((v) => [v.label, []]));
    const cpus = new Map(opts.variants.map((v) => [v.label, []]));
    const outcome = new Map();
    for (let round = 0; round < opts.warmup + opts.runs; round++) {
      for (const v of shuffled(opts.variants)) {
        const r = runOnce(v, args);
        // Every variant must do the same: same exit status and output (debug lines of the cache aside).
        const out = `${r.status}:${r.out.replace(/^lazypull code cache: .*\n/gm, '')}`;
        if (!outcome.has(name)) outcome.set(name, { label: v.label, out });
        else if (outcome.get(name).out !== out) {
          throw new Error(`${name}: ${v.label} ended differently from ${outcome.get(name).label}:\n${out}\n---\n${outcome.get(name).out}`);
        }
        if (round >= opts.warmup) {
          times.get(v.label).push(r.ms);
          cpus.get(v.label).push(r.cpu);
        }
      }
    }
    for (const v of opts.variants) {
      const t = times.get(v.label).sort((a, b) => a - b);
      const c = cpus.get(v.label).sort((a, b) => a - b);
      rows.push([`\`lazypull ${args.join(' ')}\``, v.label, quantile(t, 0.5), quantile(t, 0.1), quantile(t, 0.9), t[0], t[t.length - 1], quantile(c, 0.5), quantile(c, 0.1), quantile(c, 0.9), t.length]);
    }
  }
  const f = (x) => x.toFixed(1);
  process.stdout.write(
    `Node ${process.version}, ${opts.runs} runs per variant and command after ${opts.warmup} warm-up runs; ` +
      'wall: ms from spawn to exit (bash included); CPU: user + system ms of the node process, all its threads.\n\n',
  );
  process.stdout.write('| command | variant | wall median ms | wall p10–p90 | wall min–max | CPU median ms | CPU p10–p90 | runs |\n');
  process.stdout.write('| --- | --- | --- | --- | --- | --- | --- | --- |\n');
  for (const [cmd, label, med, p10, p90, min, max, cmed, c10, c90, n] of rows) {
    process.stdout.write(`| ${cmd} | ${label} | **${f(med)}** | ${f(p10)}–${f(p90)} | ${f(min)}–${f(max)} | ${f(cmed)} | ${f(c10)}–${f(c90)} | ${n} |\n`);
  }
}

try {
  main();
} finally {
  rmSync(work, { recursive: true, force: true });
}
