#!/usr/bin/env node
/**
 * The `lazypull` command line: a thin layer that parses arguments and calls
 * into the converter, the filesystem and the snapshotter.
 */
import { Command } from 'commander';
import { redact, toError } from '../errors';
import { exitQuietlyOnEpipe, reportError } from './command-exit';

/**
 * A command's module is loaded only when the command runs: every
 * `lazypull mount` layer server and `lazypull pull` starts in a fraction of
 * the time it would take to load all commands.
 */
function lazy<M>(load: () => M, pick: (m: M) => (...args: any[]) => Promise<void>): (...args: any[]) => Promise<void> {
  return (...args: any[]) => pick(load())(...args);
}

function run(action: (...args: any[]) => Promise<void>): (...args: any[]) => Promise<void> {
  return async (...args: any[]) => {
    try {
      await action(...args);
    } catch (value) {
      reportError(value);
    }
  };
}

exitQuietlyOnEpipe();

const program = new Command();
program.name('lazypull').description('Lazy pulling of container images: eStargz conversion and a containerd remote snapshotter');

program
  .command('convert-layer')
  .description('convert one layer (tar or tar.gz) into an eStargz blob')
  .argument('<in>', 'input layer: .tar.gz or plain .tar')
  .argument('<out>', 'output eStargz blob (written atomically)')
  .option('--chunk-size <bytes>', 'split regular files into chunks of this size (default 4194304)')
  .option('--level <0-9>', 'gzip compression level (default 9)')
  .option('--prioritize <listfile>', 'file listing paths in access order; they go first, then .prefetch.landmark')
  .option('--json', 'print one JSON object with digest, size, diffID, tocDigest, uncompressedSize')
  .action(run(lazy(() => require('./layer-commands') as typeof import('./layer-commands'), (m) => m.convertLayerCommand)));

program
  .command('convert')
  .description('convert a whole image to eStargz: SRC and DST are oci:DIR[:TAG] or HOST[:PORT]/REPO[:TAG|@DIGEST]')
  .argument('<src>')
  .argument('<dst>')
  .option('--plain-http', 'talk plain HTTP to the registries')
  .option('--platform <os/arch>', 'convert only this platform of a multi-platform image (default: this machine)')
  .option('--all-platforms', 'convert every platform of a multi-platform image')
  .option('--level <0-9>', 'gzip compression level (default 9)')
  .option('--chunk-size <bytes>', 'chunk size for regular files (default 4194304)')
  .option('--prioritize <listfile>', 'paths in access order, applied to every layer')
  .option('--json', 'print a JSON summary')
  .action(run(lazy(() => require('./image-commands') as typeof import('./image-commands'), (m) => m.convertImageCommand)));

program
  .command('toc')
  .description('print the TOC JSON of a local eStargz blob')
  .argument('<blob>')
  .action(run(lazy(() => require('./layer-commands') as typeof import('./layer-commands'), (m) => m.tocCommand)));

program
  .command('demo')
  .description('build a sample image, convert it to eStargz into a private loopback registry, read its TOC lazily, run it with a private containerd, clean up (root)')
  .option('--json', 'print one JSON object with the measured facts, nothing else')
  .option('--keep', 'keep the temp dir (image, registry storage, containerd root and log) and print where it is')
  .action(run(lazy(() => require('./demo-command') as typeof import('./demo-command'), (m) => m.demoCommand)));

program
  .command('mount')
  .description('mount one eStargz layer of an image lazily over FUSE (root), in the foreground until SIGINT/SIGTERM; or show a mount\'s status')
  .argument('[ref]', 'image reference HOST[:PORT]/REPO[:TAG|@DIGEST]')
  .argument('[layer-digest]', 'digest of the layer (from the image manifest)')
  .argument('[mountpoint]', 'directory to mount at (created if missing)')
  .option('--status <mountpoint>', 'print bytes fetched / local / total of a running mount, then exit')
  .option('--json', 'machine-readable output')
  .option('--plain-http', 'talk plain HTTP to the registry')
  .option('--hosts-dir <dir>', 'containerd-style hosts.toml directory (registry mirrors, plain-HTTP origins)')
  .option('--no-background-fetch', 'fetch only what is read (and the prefetch landmark range)')
  .option('--no-prefetch', 'skip the landmark prefetch at mount')
  .option('--no-verify', 'mount a layer without the TOC digest annotation (a TOC that mismatches one is always refused)')
  .option('--toc-digest <digest>', "the layer's toc.digest annotation, when known: the manifest is not fetched and the TOC must match it")
  .option('--cache-dir <dir>', 'chunk cache directory (default /var/lib/lazypull/cache)')
  .option('--cache-size <bytes>', 'disk cache limit (default 10 GiB)')
  .option('--memory-cache-size <bytes>', 'memory cache limit (default 128 MiB)')
  .option('--state-dir <dir>', 'where mount status files live (default /run/lazypull)')
  .option('--standby', 'internal: wait with modules loaded for a job (JSON on stdin); used by the snapshotter')
  .option('--read-timeout <ms>', 'a file read not served by then fails with EIO (default 30000)')
  .action(run(lazy(() => require('./mount-command') as typeof import('./mount-command'), (m) => m.mountCommand)));

const collect = (value: string, previous: string[]): string[] => [...previous, value];

program
  .command('snapshotter')
  .description('run the containerd proxy snapshotter (root): eStargz layers are mounted lazily over FUSE, others fall back to a normal pull')
  .option('--config <file>', 'TOML configuration (default /etc/lazypull/config.toml, optional)')
  .option('--root <dir>', 'state directory: metadata, snapshots, mounts (default /var/lib/lazypull)')
  .option('--address <socket>', 'unix socket for containerd (default /run/lazypull/lazypull.sock)')
  .option('--plain-http-registry <host:port>', 'a registry spoken to over plain HTTP (repeatable)', collect, [])
  .option('--hosts-dir <dir>', 'containerd-style hosts.toml directory (registry mirrors)')
  .option('--no-background-fetch', 'fetch only what containers read (and the prefetch landmark range)')
  .option('--metrics-address <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics')
  .option('--log-level <level>', 'debug, info, warn or error')
  .action(run(lazy(() => require('./snapshotter-command') as typeof import('./snapshotter-command'), (m) => m.snapshotterCommand)));

program
  .command('pull')
  .description('create an image in containerd with its layers prepared through the lazypull snapshotter (eStargz layers mount lazily, others are fetched)')
  .argument('<ref>', 'image reference HOST[:PORT]/REPO[:TAG|@DIGEST]')
  .option('--address <sock>', 'containerd socket (default $CONTAINERD_ADDRESS or /run/containerd/containerd.sock)')
  .option('--namespace <ns>', 'containerd namespace (default $CONTAINERD_NAMESPACE or "default")')
  .option('--snapshotter <name>', 'containerd snapshotter plugin to prepare layers with (default "lazypull")')
  .option('--plain-http', 'talk plain HTTP to the registry')
  .option('--hosts-dir <dir>', 'registry mirrors in containerd\'s hosts.toml layout (<dir>/<registry>/hosts.toml)')
  .option('--platform <os/arch>', 'platform of a multi-platform image (default: this machine)')
  .option('--json', 'print one JSON object with the image and each layer\'s digest and mode (lazy, fetched, existing)')
  .option('--snapshotter-address <socket>', 'the lazypull snapshotter daemon that does the pull (default $LAZYPULL_SNAPSHOTTER_ADDRESS or /run/lazypull/lazypull.sock; without one the pull runs in this process)')
  .option('--no-daemon', 'pull in this process even if the snapshotter daemon is there')
  .action(run(lazy(() => require('./pull-command') as typeof import('./pull-command'), (m) => m.pullCommand)));

program
  .command('controller')
  .description('run the in-place upgrade controller (root): CloneSets applied over HTTP, pods through the CRI, state in an embedded store')
  .option('--cri <sock>', 'CRI endpoint: unix socket of containerd (with its CRI plugin)')
  .option('--state <dir>', 'state directory: store, pod logs')
  .option('--listen <host:port>', 'HTTP API address (default 127.0.0.1:8450)')
  .option('--cgroup-parent <path>', 'cgroupfs parent of the pods (default: the runtime\'s)')
  .option('--namespace <ns>', 'namespace in the pod sandboxes\' metadata (default "lazypull")')
  .option('--log-level <level>', 'debug, info, warn or error')
  .action(run(lazy(() => require('./controller-command') as typeof import('./controller-command'), (m) => m.controllerCommand)));

{
  const rolloutModule = (): typeof import('./rollout-command') => require('./rollout-command') as typeof import('./rollout-command');
  const server = '--server <url>';
  const serverHelp = 'controller HTTP API (default $LAZYPULL_SERVER or http://127.0.0.1:8450)';
  const rollout = program.command('rollout').description('apply, watch, pause, resume and delete CloneSets, and label their pods, through the controller\'s HTTP API');
  rollout
    .command('apply')
    .description('apply a CloneSet manifest (YAML)')
    .requiredOption('-f, --file <file>', 'manifest file (- for stdin)')
    .option('--json', 'print the result as JSON')
    .option(server, serverHelp)
    .action(run(lazy(rolloutModule, (m) => m.rolloutApplyCommand)));
  rollout
    .command('status')
    .description('show a CloneSet as `kubectl get cloneset` does: NAME DESIRED UPDATED UPDATED_READY READY TOTAL AGE')
    .argument('<name>')
    .option('--watch', 'keep printing a line whenever the numbers change')
    .option('--json', 'print the status object (with pods, containers and image references) as JSON')
    .option('--interval <ms>', 'poll interval of --watch against a controller without watches (default 1000)')
    .option(server, serverHelp)
    .action(run(lazy(rolloutModule, (m) => m.rolloutStatusCommand)));
  rollout.command('pause').description('pause updates of a CloneSet').argument('<name>').option(server, serverHelp).action(run(lazy(rolloutModule, (m) => m.rolloutPauseCommand)));
  rollout.command('resume').description('resume updates of a CloneSet').argument('<name>').option(server, serverHelp).action(run(lazy(rolloutModule, (m) => m.rolloutResumeCommand)));
  rollout.command('delete').description('delete a CloneSet and its pods').argument('<name>').option(server, serverHelp).action(run(lazy(rolloutModule, (m) => m.rolloutDeleteCommand)));
  rollout
    .command('label')
    .description('add (KEY=VALUE) or remove (KEY-) labels of one pod, as `kubectl label pod` does; they last as long as the pod\'s sandbox (a recreated pod starts without them)')
    .argument('<name>', 'the CloneSet')
    .argument('<pod>', 'the pod')
    .argument('<labels...>', 'KEY=VALUE to set, KEY- to remove')
    .option('--overwrite', 'change a label that already has another value')
    .option('--json', 'print the pod\'s labels after the change as JSON')
    .option(server, serverHelp)
    .action(run(lazy(rolloutModule, (m) => m.rolloutLabelCommand)));
}

program.parseAsync(process.argv).catch((value) => {
  process.stderr.write(`lazypull: ${redact(toError(value).message)}\n`);
  process.exitCode = 1;
});
